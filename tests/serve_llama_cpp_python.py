"""Start llama-cpp-python's OpenAI-compatible server with eager's llama.cpp model parameters.

``python tests/serve_llama_cpp_python.py ARGS`` is ``python -m llama_cpp.server ARGS``,
except that models load with :func:`eager.backends.llama.model_params` (extra buffer
types off on AMX CPUs, where they crash batched decodes), as eager's own backend does.
"""

import runpy

import llama_cpp.llama_cpp as lib

from eager.backends.llama import model_params

_default = lib.llama_model_default_params
lib.llama_model_default_params = lambda: model_params(type("Lib", (), {"llama_model_default_params": staticmethod(_default)}))
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
