def page(model_name: str) -> str:
    return "<html><body>playground</body></html>"
