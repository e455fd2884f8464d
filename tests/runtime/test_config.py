"""gin plumbing: parse order, and errors that name the file or binding they came from."""

import gin
import pytest

from tfmatch import config

TOY = "tests/support/toy.gin"


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_parse_order_base_then_saved_then_files_then_bindings(tmp_path):
    (tmp_path / config.OPERATIVE_CONFIG).write_text(
        "import tests.support.toy\ntrain.log_every = 7\ntrain.max_steps = 70\ntrain.keep_checkpoints = 9\n")
    config.parse([TOY], ["train.max_steps = 30"], model_dir=str(tmp_path), finalize=False)
    assert gin.query_parameter("train.strategy") == "auto"  # configs/base
    assert gin.query_parameter("train.keep_checkpoints") == 9  # the saved operative config
    assert gin.query_parameter("train.log_every") == 5  # the --gin_file overrides the saved config
    assert gin.query_parameter("train.max_steps") == 30  # --gin_bindings come last
    config.parse([TOY], model_dir=str(tmp_path), use_saved_config=False, finalize=False)
    assert gin.query_parameter("train.keep_checkpoints") == 5


@pytest.mark.parametrize("binding, needle", [
    ("train.max_stepz = 3", "max_stepz"),  # gin's own check (a function)
    ("ToyDescriptor.chanels = 4", "ToyDescriptor has no parameter 'chanels'"),  # a Keras class with **kwargs
    ("NoSuchThing.x = 1", "NoSuchThing"),
])
def test_unknown_binding_names_the_binding(binding, needle):
    with pytest.raises(config.ConfigError) as err:
        config.parse([TOY], [binding], finalize=False)
    assert f"--gin_bindings {binding!r}" in str(err.value) and needle in str(err.value)


def test_unknown_parameter_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text(f"include '{TOY}'\nToyDescriptor.descriptor_dims = 4\n")
    with pytest.raises(config.ConfigError) as err:
        config.parse([str(bad)], finalize=False)
    assert str(bad) in str(err.value) and "descriptor_dims" in str(err.value)


def test_keras_keyword_arguments_are_accepted():
    config.parse([TOY], ["ToyDescriptor.name = 'toy'"], finalize=False)
    assert gin.query_parameter("ToyDescriptor.name") == "toy"


def test_missing_gin_file_is_named():
    with pytest.raises(config.ConfigError, match="gin file not found: 'no/such.gin'"):
        config.parse(["no/such.gin"], finalize=False)


def test_recipe_includes_log_no_gin_path_errors(caplog):
    """A recipe's ``include 'data/...gin'`` resolves on the search path without gin's spurious ERROR line."""
    import logging

    with caplog.at_level(logging.INFO):
        config.parse(["methods/superpoint/magicpoint.gin"], finalize=False)
    assert gin.query_parameter("synthetic_shapes_dataset.canvas_size") == (960, 1280)  # the include was read
    assert not [r for r in caplog.records if "Path not found" in r.getMessage()]
