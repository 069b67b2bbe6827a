"""Session fixtures for the real-weight tests: the SmolLM2 teacher and pruned student, converted once into tmp."""
import pytest


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    pytest.importorskip("gguf", reason="pip install gguf")
    from gadx.real.smollm2 import convert_teacher, gguf_path

    try:
        gguf_path()
    except ValueError as e:
        pytest.skip(str(e))
    return convert_teacher(tmp_path_factory.mktemp("smol") / "teacher")


@pytest.fixture(scope="session")
def student_dir(teacher_dir, tmp_path_factory):
    from gadx.real.smollm2 import make_student

    return make_student(teacher_dir, tmp_path_factory.mktemp("smol") / "student")
