"""``python -m qwen_factory_kit.launch recipe.yaml [key=value ...]`` (also under torchrun -m)."""

import sys

from .entry import main

sys.exit(main(sys.argv[1:]))
