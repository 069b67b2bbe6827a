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


@pytest.fixture(scope="session")
def world_tok(tmp_path_factory):
    """The embedded world's small sentencepiece tokenizer (trained in seconds; the tiny models' vocabulary)."""
    from gadx.tokenizer import train_sentencepiece
    from gadx.world import World

    folder = tmp_path_factory.mktemp("world_tok")
    train_sentencepiece(World(seed=0).corpus(), folder, 400, chat_template="llama3")
    return str(folder)
