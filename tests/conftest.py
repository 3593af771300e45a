import copy
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: busy-waiting threads collapse under load

import pytest  # noqa: E402
import torch  # noqa: E402

from congkit.models import char_tokenizer, tiny_llama
from congkit.pipeline.world_build import build_world, smoke_world_config

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def plain_tokenizer():
    return char_tokenizer(chat_template=False)


def _model(tokenizer, seed):
    # A larger init spread than usual gives peaked next-token distributions, so heads and argmaxes are meaningful.
    return tiny_llama(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=seed, init_std=0.3)


@pytest.fixture(scope="session")
def expert(tokenizer):
    return _model(tokenizer, seed=1)


@pytest.fixture(scope="session")
def amateur(tokenizer):
    return _model(tokenizer, seed=2)


@pytest.fixture(scope="session")
def peaky_expert(expert):
    """The test expert with its output layer x4: heads of one token at about 2 in 3 steps at lambda 0.3 (a random
    model's are rarely single), so both the lazy path's forced and read steps run."""
    peaky = copy.deepcopy(expert)
    with torch.no_grad():
        peaky.get_output_embeddings().weight.mul_(4.0)
    return peaky


PROMPTS = ["Add 3 and 4.", "Sort: b a c", "Reverse the word 'hello' please.", "Count the letters in abcabc"]


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory):
    """The smoke world, built once per test session (~25 s)."""
    return build_world(smoke_world_config(), root=tmp_path_factory.mktemp("world"), progress=False)


def pytest_collection_modifyitems(items):
    """Tests that need the smoke world (built once, ~25 s, then trained on) are `slow`: `make test-fast` skips them."""
    for item in items:
        if "smoke_world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
