"""The remote code's transformers floor: below it, loading stops with one sentence naming both versions.

Loading on the real older releases (4.57.x, 5.0, a middle 5.x) is checked by tests/compat/check_remote_code.py in CI.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import save_tiny_mtst

from mtst.remote.configuration_mtst import MIN_TRANSFORMERS_VERSION, check_transformers_version


@pytest.mark.parametrize("version", ["4.57.0", "4.57.6", "5.0.0", "5.17.0", "5.24.0", "5.30.0.dev0", "6.0.0rc1"])
def test_supported_transformers_versions_pass(version):
    check_transformers_version(version)


@pytest.mark.parametrize("version", ["4.56.2", "4.46.0", "3.5.1"])
def test_older_transformers_fail_with_one_sentence_naming_both_versions(version):
    with pytest.raises(ImportError) as err:
        check_transformers_version(version)
    message = str(err.value)
    assert f"transformers {version} is installed" in message, message
    assert f"transformers>={MIN_TRANSFORMERS_VERSION}" in message, message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith("."), message


def test_remote_code_load_on_an_older_transformers_stops_with_that_sentence(tmp_path):
    """A fresh process whose transformers reports 4.56.2 loads a saved model through AutoModel: the remote
    configuration file refuses with the sentence, before anything else is built."""
    save_tiny_mtst(tmp_path / "model")
    script = textwrap.dedent(
        f"""
        import transformers
        transformers.__version__ = "4.56.2"
        from transformers import AutoModel
        try:
            AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        except ImportError as err:
            print("ERROR:", err)
        else:
            print("LOADED")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = (
        f"ERROR: This MTST model needs transformers>={MIN_TRANSFORMERS_VERSION}, but transformers 4.56.2 is "
        f'installed; upgrade it with `pip install -U "transformers>={MIN_TRANSFORMERS_VERSION}"`.'
    )
    assert result.stdout.strip() == expected, result.stdout + result.stderr[-2000:]
