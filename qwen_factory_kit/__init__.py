"""qwen_factory_kit (``qfk``): correct, fast and repeatable Qwen3 fine-tuning with LLaMA-Factory.

The Python API is usable without the command line::

    from qwen_factory_kit.convert import convert
    result = convert("medical-r1", "examples/medical_r1/rows.jsonl", output="data/med.jsonl")
    print(result.read, result.written, result.rejected)
"""

__version__ = "0.1.0"
