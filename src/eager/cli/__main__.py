import sys

from eager.cli import main

sys.exit(main())
