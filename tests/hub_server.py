"""A small Hugging Face Hub server for tests: repos, commits and downloads on 127.0.0.1, standard library only.

It speaks the part of the Hub protocol that `huggingface_hub` (and through it `transformers`' `push_to_hub` /
`from_pretrained`, `sentence-transformers`, `HfFileSystem` and `datasets`' `load_dataset` / `push_to_hub`) uses to
create repos, commit files and download them:

- `POST /api/repos/create`, `DELETE /api/repos/delete`, `GET /api/whoami-v2`, `POST /api/validate-yaml`
- `GET /api/{type}s/{ns}/{name}` and `.../revision/{rev}`: repo info (`sha`, `siblings`, `config`, `cardData`)
- `GET .../tree/{rev}[/{path}]` (`recursive`, `expand`), `POST .../paths-info/{rev}`
- `POST .../preupload/{rev}` (every file is "regular": no LFS, no Xet), `POST .../commit/{rev}` (NDJSON body with
  `header`, `file` (base64), `deletedFile` and `deletedFolder` lines; `create_pr=1` opens `refs/pr/N`)
- `GET .../refs`, `GET .../commits/{rev}`, `POST|DELETE .../branch/{name}`, `POST .../tag/{rev}`,
  `DELETE .../tag/{name}`, `GET .../auth-check`
- `HEAD|GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag` (the git blob sha1, as the
  Hub sends for regular files), `Content-Length` and single `Range` requests.

Every commit gets a 40-hex id, so `revision=<sha>` works as well as branch names, tags, `refs/pr/N` and
`refs/convert/parquet` (the Hub's automatic parquet export of a dataset, written here by `commit_files(...,
revision="refs/convert/parquet")`: a history of its own, listed under `converts` by `.../refs`). Writes
need `Authorization: Bearer <server.token>` (401 otherwise); reads are anonymous unless the repo is private.
Every request (method, path, headers) is kept in `server.requests`, and `server.files_containing(needle)` searches
everything ever committed, so a test can check that a token never leaked into an uploaded file.

`huggingface_hub` reads `HF_ENDPOINT` once, at import, so the client side of a test runs in a fresh subprocess:
`run_client(code, server.endpoint, server.token, tmp_path)` (or `server.run_client(code, tmp_path)`).

    pytest_plugins = ["hub_server"]  # in a test module (or the top conftest.py): provides the `hub_server` fixture

    def test_push(hub_server, tmp_path):
        hub_server.run_client("from huggingface_hub import HfApi; HfApi().create_repo('user/x')", tmp_path)
        assert hub_server.list_files("user/x") == [".gitattributes"]

Importing names from this module in a test module that also lists it in `pytest_plugins` makes pytest warn that
it cannot assert-rewrite it; use the fixture's methods there, or `HubServer` directly as a context manager.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

__all__ = ["DEFAULT_TOKEN", "HubServer", "HubServerError", "RecordedRequest", "client_env", "hub_server", "run_client"]

DEFAULT_TOKEN = "hf_mtstTestToken0123456789abcdefABCDEF"
DEFAULT_USER = "user"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX_PREFIX = re.compile(r"^[0-9a-f]{7,39}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
_CARD_KEYS = ("pipeline_tag", "library_name", "tags", "license", "language", "base_model", "datasets", "metrics")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha(data: bytes) -> str:
    """The git blob id of `data`: what the Hub sends as `oid`/`ETag` for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServerError(Exception):
    """An HTTP error answer: status, message, and the Hub's `X-Error-Code` when it has one."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **payload):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.payload = payload  # extra fields of the JSON error body


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. `headers` keeps the client's spelling of the header names."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int


@dataclass
class _Commit:
    oid: str
    parents: list[str]
    files: dict[str, str]  # path -> blob oid
    title: str
    message: str
    date: str


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    tags: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, str] = field(default_factory=dict)  # N -> commit oid (ref refs/pr/N)
    converts: dict[str, str] = field(default_factory=dict)  # name -> commit oid (ref refs/convert/name)
    commits: dict[str, _Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Commit oid of a branch, tag, `refs/pr/N`, `refs/convert/x`, `refs/heads|tags/x`, full sha or sha prefix."""
        for prefix, table in (
            ("refs/heads/", self.branches),
            ("refs/tags/", self.tags),
            ("refs/convert/", self.converts),
            ("", self.branches),
        ):
            if revision.startswith(prefix) and revision[len(prefix) :] in table:
                return table[revision[len(prefix) :]]
        if revision in self.tags:
            return self.tags[revision]
        m = re.fullmatch(r"refs/pr/(\d+)", revision)
        if m and int(m.group(1)) in self.pulls:
            return self.pulls[int(m.group(1))]
        if _HEX40.match(revision):
            return revision if revision in self.commits else None
        if _HEX_PREFIX.match(revision):
            found = [oid for oid in self.commits if oid.startswith(revision)]
            return found[0] if len(found) == 1 else None
        return None


class HubServer:
    """An in-process Hub server on 127.0.0.1 (a free port), storing repos under `root`.

    Use it as a context manager (`with HubServer() as server: ...`) or through the `hub_server` fixture.
    `endpoint` is the URL to give clients as `HF_ENDPOINT`; `token` is the only token accepted for writes;
    `username` is what `whoami` answers and the namespace of repos created without one.
    """

    def __init__(
        self, root: str | os.PathLike | None = None, *, token: str = DEFAULT_TOKEN, username: str = DEFAULT_USER
    ):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hub_server_") if root is None else root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.username = username
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions (answered with 500)
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blob_sizes: dict[str, int] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HubServer:
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests (server side)
    def create_repo(
        self, repo_id: str, *, repo_type: str = "model", private: bool = False, exist_ok: bool = False
    ) -> str:
        """Create a repo directly (no HTTP), with the Hub's initial `.gitattributes` commit; returns its URL."""
        if "/" not in repo_id:
            repo_id = f"{self.username}/{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                if not exist_ok:
                    raise HubServerError(409, f"You already created this {repo_type} repo")
            else:
                repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
                self._repos[(repo_type, repo_id)] = repo
                self._commit(repo, "main", {".gitattributes": _GITATTRIBUTES}, [], "initial commit", "")
        return f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        *,
        deletions: tuple[str, ...] = (),
        message: str = "Upload files",
        revision: str = "main",
        repo_type: str = "model",
    ) -> str:
        """Commit `files` (path -> content) directly (no HTTP) to branch `revision` (or to `refs/convert/<name>`);
        returns the commit sha."""
        adds = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
        with self._lock:
            return self._commit(self._repo(repo_type, repo_id), revision, adds, list(deletions), message, "")

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Tag the commit that `revision` points to (no HTTP); returns its sha."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            if tag in repo.tags:
                raise HubServerError(409, f"Tag already exists: {tag}")
            repo.tags[tag] = self._resolve(repo, revision)
            return repo.tags[tag]

    def head(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The commit sha that `revision` points to."""
        with self._lock:
            return self._resolve(self._repo(repo_type, repo_id), revision)

    def commits(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[str]:
        """Commit shas reachable from `revision`, newest first."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            return [c.oid for c in self._history(repo, self._resolve(repo, revision))]

    def list_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> list[str]:
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            return sorted(repo.commits[self._resolve(repo, revision)].files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bytes:
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            files = repo.commits[self._resolve(repo, revision)].files
            if path not in files:
                raise KeyError(f"{path} is not in {repo_id}@{revision}")
            return self._blob(files[path])

    def repo_path(self, repo_id: str, *, repo_type: str = "model") -> Path:
        """Folder holding a plain copy of the repo's `main` branch (rewritten after each commit to it)."""
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        with self._lock:
            return sorted(rid for rtype, rid in self._repos if rtype == repo_type)

    def files_containing(self, needle: str | bytes) -> list[str]:
        """`"{repo_id}@{sha}:{path}"` for every committed file (any repo, any commit) whose bytes contain `needle`."""
        needle = needle.encode() if isinstance(needle, str) else needle
        hits = []
        with self._lock:
            for repo in self._repos.values():
                for commit in repo.commits.values():
                    hits += [
                        f"{repo.repo_id}@{commit.oid}:{path}"
                        for path, oid in sorted(commit.files.items())
                        if needle in self._blob(oid)
                    ]
        return hits

    def requests_with_token(self) -> list[RecordedRequest]:
        """The recorded requests that carried `Authorization: Bearer <token>`."""
        return [r for r in self.requests if _bearer(r.headers) == self.token]

    def client_env(self, hf_home: str | os.PathLike, *, token: str | None | bool = True) -> dict[str, str]:
        """Environment for a client process; `token=True` means this server's token, None/False means anonymous."""
        return client_env(self.endpoint, self.token if token is True else token or None, hf_home)

    def run_client(self, code_or_script, tmp_path, *, token: str | None | bool = True, **kwargs):
        """`run_client(...)` against this server; `token=True` sends this server's token, None/False none."""
        self.check()
        return run_client(
            code_or_script, self.endpoint, self.token if token is True else token or None, tmp_path, **kwargs
        )

    def check(self) -> None:
        """Raise if the server hit an unexpected exception (it answered 500)."""
        if self.errors:
            raise AssertionError("hub server errors:\n" + "\n".join(self.errors))

    # ------------------------------------------------------------------ storage
    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubServerError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> str:
        oid = repo.resolve(revision)
        if oid is None:
            raise HubServerError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid

    def _blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid[:2] / oid).read_bytes()

    def _store_blob(self, data: bytes) -> str:
        oid = git_blob_sha(data)
        path = self.root / "blobs" / oid[:2] / oid
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{oid}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._blob_sizes[oid] = len(data)
        return oid

    @staticmethod
    def _history(repo: _Repo, oid: str) -> list[_Commit]:
        out = []
        while oid:
            commit = repo.commits[oid]
            out.append(commit)
            oid = commit.parents[0] if commit.parents else ""
        return out

    def _commit(
        self,
        repo: _Repo,
        branch: str,
        additions: dict[str, bytes],
        deletions: list[tuple[str, bool] | str],
        title: str,
        description: str,
        *,
        parent: str | None = None,
        pr: bool = False,
    ) -> str:
        """Apply additions/deletions on top of `branch` (or `parent`); move the branch, or open a PR ref.

        `branch` may be `refs/convert/<name>`: its first commit starts a history of its own (no files, no parent),
        as the Hub's parquet converter does."""
        convert = branch[len("refs/convert/") :] if branch.startswith("refs/convert/") else None
        if convert is not None and not _NAME.match(convert):
            raise HubServerError(400, f"Invalid convert ref: {branch}")
        if parent is None:
            parent = repo.converts.get(convert) if convert is not None else repo.branches.get(branch)
            if parent is None and repo.commits and convert is None:
                raise HubServerError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        files = dict(repo.commits[parent].files) if parent else {}
        for item in deletions:
            path, is_folder = item if isinstance(item, tuple) else (item, False)
            path = _clean_path(path.rstrip("/"))
            if is_folder:
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise HubServerError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            elif files.pop(path, None) is None:
                raise HubServerError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        for path, data in additions.items():
            files[_clean_path(path)] = self._store_blob(data)
        date = _now()
        seed = json.dumps([parent, sorted(files.items()), title, description, date, next(self._counter)])
        oid = hashlib.sha1(f"commit {seed}".encode()).hexdigest()
        repo.commits[oid] = _Commit(oid, [parent] if parent else [], files, title, description, date)
        if pr:
            number = max(repo.pulls, default=0) + 1
            repo.pulls[number] = oid
        elif convert is not None:
            repo.converts[convert] = oid
        else:
            repo.branches[branch] = oid
            if branch == "main":
                self._checkout(repo)
        return oid

    def _checkout(self, repo: _Repo) -> None:
        folder = self.repo_path(repo.repo_id, repo_type=repo.repo_type)
        shutil.rmtree(folder, ignore_errors=True)
        for path, oid in repo.commits[repo.branches["main"]].files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self._blob(oid))

    # ------------------------------------------------------------------ JSON views
    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _info(self, repo: _Repo, oid: str) -> dict:
        commit = repo.commits[oid]
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [
                {"rfilename": p, "size": self._blob_sizes.get(b), "blobId": b} for p, b in sorted(commit.files.items())
            ],
            "usedStorage": sum(self._blob_sizes.get(b, 0) for b in commit.files.values()),
        }
        if repo.repo_type == "space":
            info["sdk"] = "static"
        card = _card_metadata(self._blob(commit.files["README.md"])) if "README.md" in commit.files else {}
        if card:
            info["cardData"] = card
            info["tags"] = list(card.get("tags") or [])
            for key in ("pipeline_tag", "library_name"):
                if key in card:
                    info[key] = card[key]
        if repo.repo_type == "model" and "config.json" in commit.files:
            try:
                config = json.loads(self._blob(commit.files["config.json"]))
            except ValueError:
                config = None
            if isinstance(config, dict):
                info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
                if "model_type" in config:
                    info["tags"].append(config["model_type"])
        return info

    def _last_commit(self, repo: _Repo, oid: str, path: str) -> dict:
        """The newest commit (first-parent history) that last changed `path` (a file, or anything under a folder)."""

        def state(commit: _Commit):
            return sorted((p, b) for p, b in commit.files.items() if p == path or p.startswith(path + "/"))

        history = self._history(repo, oid)
        found = history[0]
        for newer, older in zip(history, history[1:]):
            found = newer
            if state(newer) != state(older):
                break
        else:
            found = history[-1]
        return {"id": found.oid, "title": found.title, "date": found.date}

    def _entries(self, repo: _Repo, oid: str, folder: str, recursive: bool, expand: bool) -> list[dict]:
        files = repo.commits[oid].files
        prefix = folder + "/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in files):
            raise HubServerError(404, f"Entry not found: {folder}", "EntryNotFound")
        out: dict[str, dict] = {}
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                sub = prefix + "/".join(parts[:i])
                out.setdefault(sub, self._entry(repo, oid, sub, expand))
            if recursive or len(parts) == 1:
                out[path] = self._entry(repo, oid, path, expand)
        return list(out.values())

    def _entry(self, repo: _Repo, oid: str, path: str, expand: bool) -> dict | None:
        files = repo.commits[oid].files
        if path in files:
            blob = files[path]
            entry = {"type": "file", "oid": blob, "size": self._blob_sizes[blob], "path": path}
        elif any(p.startswith(path + "/") for p in files):
            content = sorted((p, b) for p, b in files.items() if p.startswith(path + "/"))
            entry = {
                "type": "directory",
                "oid": hashlib.sha1(repr(content).encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        else:
            return None
        if expand:
            entry["lastCommit"] = self._last_commit(repo, oid, path)
        return entry


def _clean_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise HubServerError(400, f"Invalid path in repo: {path!r}")
    return path


def _bearer(headers: dict[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "authorization" and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return None


def _card_metadata(readme: bytes) -> dict:
    """Top-level scalars and `- item` lists from a README's YAML front matter (enough for repo info)."""
    text = readme.decode("utf-8", "replace")
    m = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return {}
    data: dict = {}
    key = None
    for line in m.group(1).splitlines():
        if (km := re.match(r"([A-Za-z_][\w-]*):\s*(.*)$", line)) is not None:
            key, value = km.group(1), km.group(2).strip()
            data[key] = value.strip("'\"") if value else []
        elif key is not None and isinstance(data.get(key), list) and (im := re.match(r"\s*-\s+(.*)$", line)):
            data[key].append(im.group(1).strip().strip("'\""))
        elif not line.startswith((" ", "\t", "-")):
            key = None
    return {k: v for k, v in data.items() if k in _CARD_KEYS and v != []}


def _flag(query: dict, name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the bound `hub` (a `HubServer`)."""

    hub: HubServer
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, format, *args):  # silence the per-request stderr log
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self, method: str):
        try:
            self.body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        with self.hub._lock:
            self.hub.requests.append(RecordedRequest(method, self.path, dict(self.headers.items()), len(self.body)))
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        while segments and segments[-1] == "":
            segments.pop()
        try:
            self._route(method, segments)
        except HubServerError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._json({"error": e.message, **e.payload}, e.status, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug here: answer 500 and keep the traceback for `hub.check()`
            tb = traceback.format_exc()
            self.hub.errors.append(f"{method} {self.path}\n{tb}")
            self._json({"error": tb}, 500, {"X-Error-Message": "Internal test server error"})

    def _auth(self, write: bool) -> bool:
        """True with a valid token; raise 401 for a wrong token, or for no token when `write`."""
        token = _bearer(dict(self.headers.items()))
        if token is not None and token != self.hub.token:
            raise HubServerError(401, "Invalid credentials in Authorization header")
        if token is None and write:
            raise HubServerError(401, "Invalid username or password.")
        return token is not None

    def _readable(self, repo_type: str, repo_id: str) -> _Repo:
        authed = self._auth(write=False)
        repo = self.hub._repo(repo_type, repo_id)
        if repo.private and not authed:
            raise HubServerError(404, "Repository not found", "RepoNotFound")
        return repo

    def _json_body(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as e:
            raise HubServerError(400, f"Invalid JSON body: {e}") from e
        if not isinstance(data, dict):
            raise HubServerError(400, "JSON body must be an object")
        return data

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, seg: list[str]):
        if seg[:1] == ["api"]:
            api = seg[1:]
            if api == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if api == ["validate-yaml"] and method == "POST":
                return self._json({"errors": [], "warnings": []})
            if api == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if api == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if len(api) >= 3 and api[0] in REPO_TYPES:
                return self._repo_api(method, REPO_TYPES[api[0]], f"{api[1]}/{api[2]}", api[3:])
            if len(api) == 2 and api[0] in REPO_TYPES:  # an id without namespace: every repo here has one
                raise HubServerError(404, "Repository not found", "RepoNotFound")
            raise HubServerError(404, f"Not found: {self.path}")
        repo_type = "model"
        if seg and seg[0] in REPO_TYPES and seg[0] != "models":
            repo_type, seg = REPO_TYPES[seg[0]], seg[1:]
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve_file(repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        if len(seg) >= 4 and seg[1] == "resolve" and method in ("GET", "HEAD"):
            raise HubServerError(404, "Repository not found", "RepoNotFound")
        raise HubServerError(404, f"Not found: {self.path}")

    def _whoami(self):
        if not self._auth(write=True):
            raise HubServerError(401, "Invalid username or password.")
        self._json(
            {
                "type": "user",
                "id": hashlib.sha1(self.hub.username.encode()).hexdigest()[:24],
                "name": self.hub.username,
                "fullname": "MTST Test User",
                "email": None,
                "emailVerified": False,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
            }
        )

    def _create_repo(self):
        self._auth(write=True)
        data = self._json_body()
        name, org = data.get("name"), data.get("organization")
        repo_type = data.get("type") or "model"
        if repo_type not in _URL_PREFIX or not isinstance(name, str) or not _NAME.match(name):
            raise HubServerError(400, f"Invalid repo name or type: {name!r} / {repo_type!r}")
        if org is not None and not (isinstance(org, str) and _NAME.match(org)):
            raise HubServerError(400, f"Invalid organization: {org!r}")
        repo_id = f"{org or self.hub.username}/{name}"
        private = data.get("visibility", "private" if data.get("private") else "public") != "public"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub._repos:
                url = self.hub._repo_url(self.hub._repos[(repo_type, repo_id)])
                raise HubServerError(409, f"You already created this {repo_type} repo", url=url)
            url = self.hub.create_repo(repo_id, repo_type=repo_type, private=private)
        self._json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self):
        self._auth(write=True)
        data = self._json_body()
        repo_id = f"{data.get('organization') or self.hub.username}/{data.get('name')}"
        repo_type = data.get("type") or "model"
        with self.hub._lock:
            self.hub._repo(repo_type, repo_id)
            del self.hub._repos[(repo_type, repo_id)]
            shutil.rmtree(self.hub.repo_path(repo_id, repo_type=repo_type), ignore_errors=True)
        self._send(200, b"")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str]):
        hub = self.hub
        action = rest[0] if rest else ""
        with hub._lock:
            if method == "GET" and action in ("", "revision"):
                repo = self._readable(repo_type, repo_id)
                revision = "/".join(rest[1:]) if action else "main"
                return self._json(hub._info(repo, hub._resolve(repo, revision)))
            if method == "GET" and action == "tree" and len(rest) >= 2:
                repo = self._readable(repo_type, repo_id)
                oid = hub._resolve(repo, rest[1])
                entries = hub._entries(
                    repo,
                    oid,
                    "/".join(rest[2:]).strip("/"),
                    _flag(self.query, "recursive"),
                    _flag(self.query, "expand"),
                )
                return self._json(entries)
            if method == "POST" and action == "paths-info" and len(rest) >= 2:
                repo = self._readable(repo_type, repo_id)
                oid = hub._resolve(repo, "/".join(rest[1:]))
                form = parse_qs(self.body.decode(), keep_blank_values=True)
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    form = {k: v if isinstance(v, list) else [str(v)] for k, v in self._json_body().items()}
                expand = form.get("expand", ["false"])[-1].lower() in ("1", "true")
                entries = [hub._entry(repo, oid, p.strip("/"), expand) for p in form.get("paths", [])]
                return self._json([e for e in entries if e is not None])
            if method == "GET" and action == "refs":
                repo = self._readable(repo_type, repo_id)
                return self._json(self._refs(repo))
            if method == "GET" and action == "commits" and len(rest) >= 2:
                repo = self._readable(repo_type, repo_id)
                history = hub._history(repo, hub._resolve(repo, "/".join(rest[1:])))
                return self._json(
                    [
                        {
                            "id": c.oid,
                            "title": c.title,
                            "message": c.message,
                            "date": c.date,
                            "authors": [{"user": hub.username, "avatar": None}],
                        }
                        for c in history
                    ]
                )
            if method == "GET" and action == "auth-check":
                self._readable(repo_type, repo_id)
                return self._json({})
            # ---- writes
            self._auth(write=True)
            repo = hub._repo(repo_type, repo_id)
            if method == "POST" and action == "preupload" and len(rest) >= 2:
                return self._preupload(repo, "/".join(rest[1:]))
            if method == "POST" and action == "commit" and len(rest) >= 2:
                return self._commit(repo, "/".join(rest[1:]))
            if action == "branch" and len(rest) >= 2:
                return self._branch(method, repo, "/".join(rest[1:]))
            if action == "tag" and len(rest) >= 2:
                return self._tag(method, repo, "/".join(rest[1:]))
        raise HubServerError(404, f"Not found: {method} {self.path}")

    def _refs(self, repo: _Repo) -> dict:
        def refs(table, kind):
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": o} for n, o in sorted(table.items())]

        out = {
            "branches": refs(repo.branches, "heads"),
            "tags": refs(repo.tags, "tags"),
            "converts": refs(repo.converts, "convert"),
        }
        if _flag(self.query, "include_prs"):
            out["pullRequests"] = [
                {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": o}
                for n, o in sorted(repo.pulls.items())
            ]
        return out

    def _preupload(self, repo: _Repo, revision: str):
        oid = self.hub._resolve(repo, revision)
        files = repo.commits[oid].files
        entries = self._json_body().get("files") or []
        answer = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
            for f in entries
        ]
        self._json({"files": answer, "commitOid": oid})

    def _commit(self, repo: _Repo, revision: str):
        create_pr = _flag(self.query, "create_pr")
        if revision not in repo.branches and not (create_pr and repo.resolve(revision)):
            if repo.resolve(revision):
                raise HubServerError(400, f"Can only commit to a branch, not to {revision}")
            raise HubServerError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        header: dict = {}
        additions: dict[str, bytes] = {}
        deletions: list[tuple[str, bool]] = []
        for raw in self.body.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                key, value = line["key"], line["value"]
            except (ValueError, KeyError, TypeError) as e:
                raise HubServerError(400, f"Invalid NDJSON commit line: {raw[:200]!r}") from e
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubServerError(400, f"Unsupported encoding {value.get('encoding')!r}")
                additions[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append((value["path"], key == "deletedFolder"))
            elif key == "lfsFile":
                raise HubServerError(400, "This test server takes no LFS files (preupload answers 'regular')")
            else:
                raise HubServerError(400, f"Unknown commit operation {key!r}")
        summary = (header.get("summary") or "").strip()
        if not summary:
            raise HubServerError(400, "Commit summary is required")
        base = repo.resolve(revision)
        parent = header.get("parentCommit")
        if parent and not base.startswith(parent):
            raise HubServerError(412, f"Parent commit {parent} is not the head of {revision} ({base})")
        oid = self.hub._commit(
            repo, revision, additions, deletions, summary, header.get("description") or "", parent=base, pr=create_pr
        )
        url = self.hub._repo_url(repo)
        payload = {"success": True, "commitOid": oid, "commitUrl": f"{url}/commit/{oid}", "pullRequestUrl": None}
        if create_pr:
            payload["pullRequestUrl"] = f"{url}/discussions/{max(repo.pulls)}"
        self._json(payload)

    def _branch(self, method: str, repo: _Repo, name: str):
        if method == "POST":
            if name in repo.branches:
                raise HubServerError(409, f"Reference already exists: refs/heads/{name}")
            start = self._json_body().get("startingPoint") or "main"
            repo.branches[name] = self.hub._resolve(repo, start)
            return self._json({})
        if method == "DELETE":
            if name not in repo.branches or name == "main":
                raise HubServerError(404 if name != "main" else 403, f"Cannot delete branch {name}")
            del repo.branches[name]
            return self._json({})
        raise HubServerError(405, f"{method} not allowed on branches")

    def _tag(self, method: str, repo: _Repo, name: str):
        if method == "POST":
            tag = self._json_body().get("tag")
            if not isinstance(tag, str) or not tag:
                raise HubServerError(400, "Missing tag name")
            if tag in repo.tags:
                raise HubServerError(409, f"Tag already exists: {tag}")
            repo.tags[tag] = self.hub._resolve(repo, name)
            return self._json({})
        if method == "DELETE":
            if repo.tags.pop(name, None) is None:
                raise HubServerError(404, f"Tag {name} not found", "RevisionNotFound")
            return self._json({})
        raise HubServerError(405, f"{method} not allowed on tags")

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str):
        hub = self.hub
        with hub._lock:
            repo = self._readable(repo_type, repo_id)
            oid = hub._resolve(repo, revision)
            blob = repo.commits[oid].files.get(path)
            if blob is None:
                raise HubServerError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
            data = hub._blob(blob)
        headers = {
            "X-Repo-Commit": oid,
            "ETag": f'"{blob}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{Path(path).name}"',
        }
        status = 200
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else len(data) - 1
            else:
                start, end = max(len(data) - int(m.group(2)), 0), len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data) and data:
                raise HubServerError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")


# ---------------------------------------------------------------------- client side
_DROPPED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_DATASETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_STORED_TOKENS_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "SENTENCE_TRANSFORMERS_HOME",
    "HF_HUB_ETAG_TIMEOUT",
)


def client_env(endpoint: str, token: str | None, hf_home: str | os.PathLike, extra: dict | None = None) -> dict:
    """`os.environ` made to talk to `endpoint`: HF_ENDPOINT, HF_HUB_DISABLE_XET=1, HF_TOKEN, a private HF_HOME.

    Offline switches and cache overrides inherited from the test session are removed, the proxy is bypassed for
    127.0.0.1, and the repository root is put on PYTHONPATH so client code can import the project's modules.
    """
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.pop("HF_TOKEN", None)
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1", "localhost"]))
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="0",
        HF_HUB_DOWNLOAD_TIMEOUT="60",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")])),
    )
    if token:
        env["HF_TOKEN"] = token
    env.update(extra or {})
    return env


_client_homes = itertools.count()


def run_client(
    code_or_script: str | os.PathLike,
    endpoint: str,
    token: str | None,
    tmp_path: str | os.PathLike,
    *,
    args: tuple[str, ...] | list[str] = (),
    hf_home: str | os.PathLike | None = None,
    env: dict | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run Python code (a `str`) or a script (a `Path`, or a `str` naming an existing `.py` file) in a fresh process.

    The process talks to the Hub at `endpoint` with `token` (None: anonymous), see `client_env`. Each call gets a
    new empty `HF_HOME` under `tmp_path` (so downloads really go over HTTP) unless `hf_home` is given. `args` become
    `sys.argv[1:]`; `env` adds variables. With `check` (default) a non-zero exit raises `AssertionError` showing
    the code, stdout and stderr. Returns the `CompletedProcess` (text mode).
    """
    tmp_path = Path(tmp_path)
    if hf_home is None:
        hf_home = tmp_path / f"hf_home_{os.getpid()}_{next(_client_homes)}_{time.monotonic_ns()}"
    Path(hf_home).mkdir(parents=True, exist_ok=True)
    is_script = isinstance(code_or_script, os.PathLike) or (
        str(code_or_script).endswith(".py") and "\n" not in str(code_or_script) and Path(code_or_script).is_file()
    )
    cmd = [sys.executable, os.fspath(code_or_script)] if is_script else [sys.executable, "-c", code_or_script]
    proc = subprocess.run(
        cmd + [str(a) for a in args],
        env=client_env(endpoint, token, hf_home, env),
        cwd=str(cwd or tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        shown = os.fspath(code_or_script) if is_script else code_or_script
        raise AssertionError(
            f"hub client exited with {proc.returncode}\n--- code ---\n{shown}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def hub_server(tmp_path_factory):
    """A running `HubServer` (`.endpoint`, `.root`, `.token`, `.requests`, ...); fails the test on server errors."""
    with HubServer(root=tmp_path_factory.mktemp("hub_server")) as server:
        yield server
        server.check()
