"""Safety rules for the whole package: no code execution from data files, Keras 2 only.

A source scan over ``src/`` (syntax trees, so docstrings that explain a rule do not trip it), and
the model loader's refusal of ``.h5`` files whose Lambda layers would run stored Python code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TF_MODULE = SRC / "roverlite" / "_tf.py"  # the one module that sets TF_USE_LEGACY_KERAS

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "keras"}  # keras: Keras 3
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


# === The scanner ===


def _root(name: str | None) -> str:
    return (name or "").split(".")[0]


def violations(source: str, allow_legacy_keras_flag: bool = False) -> list[str]:
    """Every use of a banned construct in ``source``, as "line N: what"."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names if _root(a.name) in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _root(node.module) in BANNED_MODULES:
            found.append(f"line {line}: from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                found.append(f"line {line}: {func.id}()")
            if isinstance(func, (ast.Name, ast.Attribute)) and getattr(func, "id", getattr(func, "attr", "")) in (
                "__import__", "import_module"
            ):
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and _root(str(arg.value)) in BANNED_MODULES:
                        found.append(f"line {line}: dynamic import of {arg.value}")
            if (
                isinstance(func, ast.Attribute)
                and func.attr in UNSAFE_YAML
                and isinstance(func.value, ast.Name)
                and func.value.id == "yaml"
            ):
                found.append(f"line {line}: yaml.{func.attr}() (use yaml.safe_load)")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"line {line}: allow_pickle={ast.unparse(kw.value)}")
                if kw.arg == "TF_USE_LEGACY_KERAS" and not allow_legacy_keras_flag:
                    found.append(f"line {line}: sets TF_USE_LEGACY_KERAS")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == "TF_USE_LEGACY_KERAS" and not allow_legacy_keras_flag:
                found.append(f"line {line}: TF_USE_LEGACY_KERAS outside roverlite/_tf.py")
            if "tensorflow-cpu" in node.value or "tensorflow_cpu" in node.value:
                found.append(f"line {line}: names tensorflow-cpu")
    return found


# === The scan ===


def test_source_tree_has_no_unsafe_deserialisation_keras3_or_second_tensorflow():
    files = sorted(SRC.rglob("*.py"))
    assert TF_MODULE in files and len(files) > 20
    problems = [
        f"{path.relative_to(SRC)} {problem}"
        for path in files
        for problem in violations(path.read_text(encoding="utf-8"), allow_legacy_keras_flag=path == TF_MODULE)
    ]
    assert problems == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import numpy, pickle as p",
        "from pickle import loads",
        "import dill",
        "x = __import__('pickle')",
        "import keras",
        "from keras import layers",
        "import keras.src.saving",
        "importlib.import_module('keras')",
        "np.load(path, allow_pickle=True)",
        "np.load(path, allow_pickle=flag)",
        "yaml.load(text, Loader=yaml.Loader)",
        "yaml.unsafe_load(text)",
        "yaml.full_load(text)",
        "eval('1 + 1')",
        "exec(code)",
        "os.environ['TF_USE_LEGACY_KERAS'] = '1'",
        "os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')",
        "subprocess.run(cmd, env={**os.environ, 'TF_USE_LEGACY_KERAS': '0'})",
        "os.environ.update(TF_USE_LEGACY_KERAS='1')",
        "REQUIREMENTS = ['numpy', 'tensorflow-cpu==2.21']",
    ],
)
def test_scanner_flags_each_banned_construct(snippet):
    assert violations(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    [
        '"""Read with allow_pickle=False, never pickle.load; yaml.load( is unsafe; TF_USE_LEGACY_KERAS."""',
        "np.load(path, allow_pickle=False)",
        "yaml.safe_load(text)",
        "from roverlite._tf import keras, tf",
        "import tf_keras as keras",
        "model.evaluate(x)",
        "from .keras import helpers",
    ],
)
def test_scanner_accepts_safe_code_and_prose(snippet):
    assert violations(snippet) == []


def test_tf_module_alone_may_set_the_legacy_keras_flag():
    source = TF_MODULE.read_text(encoding="utf-8")
    assert violations(source) != []  # it does set the flag ...
    assert violations(source, allow_legacy_keras_flag=True) == []  # ... and nothing else


# === Model files that would run stored code ===


def _lambda_model(marker: Path, kind: str):
    """A tf_keras model with a Lambda layer that creates ``marker`` whenever it is executed."""
    from roverlite._tf import keras

    path = str(marker)
    lam = keras.layers.Lambda(lambda x: (open(path, "a").close(), x)[1], name="marker_lambda")
    if kind == "sequential":
        return keras.Sequential([keras.Input((4,)), lam, keras.layers.Dense(2)])
    inputs = keras.Input((4,))
    outputs = lam(inputs)
    if kind == "nested":  # the Lambda sits inside a sub-model, one level below the top layer list
        inner = keras.Model(inputs, outputs, name="inner")
        inputs = keras.Input((4,))
        outputs = inner(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(outputs))

# "nested" and "sequential" were one bug (only the top-level layer list was read); fixed in modelfile.


@pytest.mark.parametrize(
    "kind",
    [
        "functional",
        "nested",
        "sequential",
    ],
)
def test_h5_with_a_lambda_layer_is_refused_without_running_its_code(tmp_path, kind):
    from roverlite._tf import keras
    from roverlite.train.modelfile import load_model_file, save_model_file

    marker = tmp_path / "lambda-ran"
    path = save_model_file(_lambda_model(marker, kind), tmp_path / "model.h5")
    assert marker.exists()  # building the model ran the lambda: the marker detects execution
    marker.unlink()

    refused = None
    try:
        load_model_file(path)
    except ValueError as err:
        refused = str(err)
    assert not marker.exists(), "loading ran the Lambda's stored code"
    assert refused is not None and "marker_lambda (Lambda)" in refused and str(path) in refused

    keras.models.load_model(path, compile=False)  # control: an unguarded load does run it
    assert marker.exists()
