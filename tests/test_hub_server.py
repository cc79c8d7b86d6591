"""The local Hub server speaks enough of the protocol for huggingface_hub and transformers to push and load.

Clients run in fresh subprocesses (huggingface_hub reads HF_ENDPOINT at import), each with an empty HF_HOME.
"""

import hashlib
import json
import re
import struct
import urllib.error
import urllib.request

import pytest

pytest_plugins = ["hub_server"]  # the `hub_server` fixture (tests/hub_server.py)

UPLOAD = r"""
import json, sys
from huggingface_hub import HfApi

api = HfApi()
assert api.whoami()["name"] == "user"
url = api.create_repo("user/tiny", exist_ok=True)
first = api.upload_folder(repo_id="user/tiny", folder_path=sys.argv[1], commit_message="v1")
api.create_repo("user/tiny", exist_ok=True)  # exists: no error, no new commit
second = api.upload_file(path_or_fileobj=b'{"version": 2}', path_in_repo="config.json", repo_id="user/tiny")
print(json.dumps({"url": url, "repo_id": url.repo_id, "first": first.oid, "second": second.oid}))
"""

DOWNLOAD = r"""
import json, os, sys
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

first = sys.argv[1]

def read_tree(folder):
    out = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            out[os.path.relpath(path, folder).replace(os.sep, "/")] = open(path, "rb").read().hex()
    return out

api = HfApi()
print(json.dumps({
    "main": read_tree(snapshot_download("user/tiny")),
    "pinned": read_tree(snapshot_download("user/tiny", revision=first)),
    "config_main": open(hf_hub_download("user/tiny", "config.json"), "rb").read().hex(),
    "config_pinned": open(hf_hub_download("user/tiny", "config.json", revision=first), "rb").read().hex(),
    "code_pinned": open(hf_hub_download("user/tiny", "modeling_tiny.py", revision=first), "rb").read().hex(),
    "sha": api.model_info("user/tiny").sha,
    "pinned_sha": api.model_info("user/tiny", revision=first).sha,
    "files": api.list_repo_files("user/tiny"),
    "commits": [c.commit_id for c in api.list_repo_commits("user/tiny")],
}))
"""

PUSH_BERT = r"""
import sys
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99)
model = BertModel(config).eval()
commit = model.push_to_hub("user/tiny-bert")
input_ids = torch.tensor([[2, 17, 45, 98, 3, 0], [2, 5, 6, 3, 0, 0]])
attention_mask = (input_ids > 0).long()
with torch.no_grad():
    out = model(input_ids=input_ids, attention_mask=attention_mask)
torch.save({"input_ids": input_ids, "attention_mask": attention_mask, "last": out.last_hidden_state,
            "pooled": out.pooler_output}, sys.argv[1])
print(commit.oid)
"""

LOAD_BERT = r"""
import sys
import torch
from transformers import AutoModel

expected = torch.load(sys.argv[1])
model = AutoModel.from_pretrained("user/tiny-bert").eval()
assert type(model).__name__ == "BertModel", type(model)
with torch.no_grad():
    out = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"])
assert torch.equal(out.last_hidden_state, expected["last"]), (out.last_hidden_state - expected["last"]).abs().max()
assert torch.equal(out.pooler_output, expected["pooled"])
print("identical")
"""

ANONYMOUS_WRITES = r"""
import json
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

api = HfApi()
status = {}
for name, call in [
    ("create_repo", lambda: api.create_repo("user/anonymous")),
    ("upload_file", lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/locked")),
    ("wrong_token", lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/locked",
                                            token="hf_wrong")),
]:
    try:
        call()
        status[name] = 200
    except HfHubHTTPError as e:
        status[name] = e.response.status_code
status["read"] = open(hf_hub_download("user/locked", "config.json"), "rb").read().decode()
print(json.dumps(status))
"""


def _safetensors_bytes() -> bytes:
    header = json.dumps({"weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


def _last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_upload_folder_then_download_by_repo_id_and_commit_sha(hub_server, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    local = {
        "config.json": b'{"version": 1}',
        "model.safetensors": _safetensors_bytes(),
        "modeling_tiny.py": b"import torch\n\n\nclass Tiny(torch.nn.Module):\n    pass\n",
    }
    for name, data in local.items():
        (folder / name).write_bytes(data)

    pushed = _last_json_line(hub_server.run_client(UPLOAD, tmp_path, args=[folder]).stdout)
    assert pushed["url"] == f"{hub_server.endpoint}/user/tiny" and pushed["repo_id"] == "user/tiny"
    first, second = pushed["first"], pushed["second"]
    assert re.fullmatch("[0-9a-f]{40}", first) and re.fullmatch("[0-9a-f]{40}", second) and first != second
    assert hub_server.commits("user/tiny")[:2] == [second, first]
    assert hub_server.list_files("user/tiny", first) == [".gitattributes", *sorted(local)]
    assert hub_server.read_file("user/tiny", "model.safetensors") == local["model.safetensors"]
    assert (hub_server.repo_path("user/tiny") / "config.json").read_bytes() == b'{"version": 2}'

    got = _last_json_line(hub_server.run_client(DOWNLOAD, tmp_path, args=[first]).stdout)
    for name, data in local.items():
        assert bytes.fromhex(got["pinned"][name]) == data, name
        if name != "config.json":
            assert bytes.fromhex(got["main"][name]) == data, name
    assert bytes.fromhex(got["main"]["config.json"]) == bytes.fromhex(got["config_main"]) == b'{"version": 2}'
    assert bytes.fromhex(got["config_pinned"]) == local["config.json"]
    assert bytes.fromhex(got["code_pinned"]) == local["modeling_tiny.py"]
    assert (got["sha"], got["pinned_sha"]) == (second, first)
    assert sorted(got["files"]) == [".gitattributes", *sorted(local)]
    assert got["commits"][:2] == [second, first]

    # The token went in headers (writes need it) and never into a stored file.
    assert any("/commit/main" in r.path for r in hub_server.requests_with_token())
    assert hub_server.files_containing(hub_server.token) == []


def test_transformers_push_to_hub_then_from_pretrained_gives_identical_outputs(hub_server, tmp_path):
    expected = tmp_path / "expected.pt"
    oid = hub_server.run_client(PUSH_BERT, tmp_path, args=[expected]).stdout.split()[-1]
    assert oid == hub_server.head("user/tiny-bert")
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub_server.list_files("user/tiny-bert"))

    out = hub_server.run_client(LOAD_BERT, tmp_path, args=[expected]).stdout
    assert out.strip().splitlines()[-1] == "identical"
    assert hub_server.files_containing(hub_server.token) == []


def _request(hub_server, method: str, path: str, body: bytes = b"", token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(hub_server.endpoint + path, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_writes_without_a_valid_token_are_refused(hub_server, tmp_path):
    hub_server.create_repo("user/locked")
    head = hub_server.commit_files("user/locked", {"config.json": "{}"})
    commit = b'{"key": "header", "value": {"summary": "x"}}\n'
    assert _request(hub_server, "POST", "/api/models/user/locked/commit/main", commit) == 401
    assert _request(hub_server, "POST", "/api/models/user/locked/commit/main", commit, token="hf_wrong") == 401
    assert _request(hub_server, "POST", "/api/repos/create", b'{"name": "x"}') == 401
    assert _request(hub_server, "GET", "/api/whoami-v2") == 401
    assert _request(hub_server, "HEAD", "/user/locked/resolve/main/config.json") == 200

    status = _last_json_line(hub_server.run_client(ANONYMOUS_WRITES, tmp_path, token=None).stdout)
    assert status == {"create_repo": 401, "upload_file": 401, "wrong_token": 401, "read": "{}"}
    assert hub_server.head("user/locked") == head
    assert hub_server.repo_ids() == ["user/locked"]


@pytest.mark.parametrize("revision", ["main", "sha"])
def test_resolve_headers_are_what_file_download_needs(hub_server, revision):
    hub_server.create_repo("user/headers")
    sha = hub_server.commit_files("user/headers", {"a/b.txt": b"hello"})
    rev = sha if revision == "sha" else "main"
    req = urllib.request.Request(f"{hub_server.endpoint}/user/headers/resolve/{rev}/a/b.txt", method="HEAD")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["X-Repo-Commit"] == sha
        assert resp.headers["ETag"] == '"' + hashlib.sha1(b"blob 5\0hello").hexdigest() + '"'  # git blob id
        assert resp.headers["Content-Length"] == "5"
    req = urllib.request.Request(
        f"{hub_server.endpoint}/user/headers/resolve/{rev}/a/b.txt", headers={"Range": "bytes=1-"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert (resp.status, resp.read()) == (206, b"ello")
    missing = urllib.request.Request(f"{hub_server.endpoint}/user/headers/resolve/{rev}/nope.txt", method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(missing, timeout=30)
    assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "EntryNotFound"
    assert err.value.headers["X-Repo-Commit"] == sha


PUSH_ST_AND_REMOTE_CODE = r"""
import os, sys
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from transformers import BertConfig, BertModel, BertTokenizerFast

vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"] + [f"w{i}" for i in range(92)]
os.makedirs("base", exist_ok=True)
with open("base/vocab.txt", "w") as f:
    f.write("\n".join(vocab))
torch.manual_seed(0)
config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99)
BertModel(config).save_pretrained("base")
BertTokenizerFast("base/vocab.txt").save_pretrained("base")
st = SentenceTransformer(modules=[Transformer("base"), Pooling(32)])
st.push_to_hub("user/tiny-st")
torch.save(st.encode(["hello world"], convert_to_tensor=True), sys.argv[1])

# trust_remote_code: the modeling file imports the config relatively, with an absolute fallback (DESIGN.md)
os.makedirs("remote", exist_ok=True)
with open("remote/configuration_foo.py", "w") as f:
    f.write("from transformers import BertConfig\n\n\nclass FooConfig(BertConfig):\n    model_type = 'foo'\n")
with open("remote/modeling_foo.py", "w") as f:
    f.write("try:\n    from .configuration_foo import FooConfig\nexcept ImportError:\n"
            "    from configuration_foo import FooConfig\nfrom transformers import BertModel\n\n\n"
            "class FooModel(BertModel):\n    config_class = FooConfig\n")
sys.path.insert(0, "remote")
from configuration_foo import FooConfig
from modeling_foo import FooModel

FooConfig.register_for_auto_class()
FooModel.register_for_auto_class("AutoModel")
FooModel(FooConfig(**config.to_diff_dict())).push_to_hub("user/remote-foo")
"""

LOAD_ST_AND_REMOTE_CODE = r"""
import sys
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

embedding = SentenceTransformer("user/tiny-st").encode(["hello world"], convert_to_tensor=True)
assert torch.equal(embedding, torch.load(sys.argv[1]))
model = AutoModel.from_pretrained("user/remote-foo", trust_remote_code=True)
assert type(model).__name__ == "FooModel" and type(model).__module__.startswith("transformers_modules."), type(model)
print("ok")
"""


@pytest.mark.slow
def test_sentence_transformers_and_remote_code_round_trip(hub_server, tmp_path):
    expected = tmp_path / "embedding.pt"
    hub_server.run_client(PUSH_ST_AND_REMOTE_CODE, tmp_path, args=[expected])
    assert {"modules.json", "1_Pooling/config.json", "model.safetensors"} <= set(hub_server.list_files("user/tiny-st"))
    assert {"configuration_foo.py", "modeling_foo.py"} <= set(hub_server.list_files("user/remote-foo"))
    loader_dir = tmp_path / "loader"  # a folder without the pushed sources, so only the Hub copy can be imported
    loader_dir.mkdir()
    out = hub_server.run_client(LOAD_ST_AND_REMOTE_CODE, tmp_path, args=[expected], cwd=loader_dir).stdout
    assert out.strip().splitlines()[-1] == "ok"
    assert hub_server.files_containing(hub_server.token) == []


REFS = r"""
import json
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

api = HfApi()
refs = api.list_repo_refs("user/refs", repo_type="dataset")
export = "refs/convert/parquet"
out = {
    "branches": {r.name: r.target_commit for r in refs.branches},
    "tags": {r.name: r.target_commit for r in refs.tags},
    "converts": {r.ref: r.target_commit for r in refs.converts},
    "export_sha": api.dataset_info("user/refs", revision=export).sha,
    "export_files": sorted(api.list_repo_files("user/refs", repo_type="dataset", revision=export)),
    "export_file": open(hf_hub_download("user/refs", "cfg/train/0000.parquet", repo_type="dataset",
                                        revision=export), "rb").read().decode(),
    "tagged_file": open(hf_hub_download("user/refs", "a.txt", repo_type="dataset", revision="v1.0"),
                        "rb").read().decode(),
}
try:
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/refs", repo_type="dataset",
                    revision=export)
    out["commit_to_export"] = 200
except HfHubHTTPError as e:
    out["commit_to_export"] = e.response.status_code
print(json.dumps(out))
"""


def test_tags_and_the_parquet_export_ref(hub_server, tmp_path):
    """A tag made with `create_tag` and the `refs/convert/parquet` history: listed by `list_repo_refs`, resolved by
    repo info, tree listing and downloads; the export has its own history and takes no commits over HTTP."""
    hub_server.create_repo("user/refs", repo_type="dataset")
    v1 = hub_server.commit_files("user/refs", {"a.txt": "one"}, repo_type="dataset")
    assert hub_server.create_tag("user/refs", "v1.0", repo_type="dataset") == v1
    v2 = hub_server.commit_files("user/refs", {"a.txt": "two"}, repo_type="dataset")
    export = hub_server.commit_files(
        "user/refs", {"cfg/train/0000.parquet": "rows"}, revision="refs/convert/parquet", repo_type="dataset"
    )
    assert hub_server.commits("user/refs", "refs/convert/parquet", repo_type="dataset") == [export]  # no parent
    exported = hub_server.list_files("user/refs", "refs/convert/parquet", repo_type="dataset")
    assert exported == ["cfg/train/0000.parquet"]  # none of main's files

    got = json.loads(hub_server.run_client(REFS, tmp_path).stdout.strip().splitlines()[-1])
    assert got["branches"] == {"main": v2} and got["tags"] == {"v1.0": v1}
    assert got["converts"] == {"refs/convert/parquet": export} and got["export_sha"] == export
    assert got["export_files"] == ["cfg/train/0000.parquet"] and got["export_file"] == "rows"
    assert got["tagged_file"] == "one"
    assert got["commit_to_export"] == 400
    assert hub_server.head("user/refs", "refs/convert/parquet", repo_type="dataset") == export  # unchanged
