"""The anchors a write is checked against are git's own answer, asked at every write.

This session first cached them, keyed on the ref files, to spare a server one git process per write; two
security reviews broke every key tried (a ref file git finds broken but a parser does not, a symbolic ref inside
`govern-anchor/`, replace objects and `core.useReplaceRefs`, a ref toggled while git read it), each letting a
server write onto a truncated ledger that git's anchors refuse. Git's resolution of refs depends on more than
the files a cache can watch, so the rule asks git. These tests keep the attacks that broke the cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from govern.api import anchors


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "first")
    return root


def tag(root: Path, name: str, message: str) -> None:
    git(root, "-c", "user.name=T", "-c", "user.email=t@example.com", "tag", "-a", name, "-m", message)


def seqs(root: Path) -> list[int]:
    return [a.seq for a in anchors.anchors(root)]


def test_a_ref_file_git_finds_broken_and_then_mended_is_seen_as_git_sees_it(repo: Path) -> None:
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "a"}')
    tag(repo, "govern-anchor/2", '{"seq": 2, "hash": "b"}')
    ref = repo / ".git" / "refs" / "tags" / "govern-anchor" / "2"
    good = ref.read_text()
    assert seqs(repo) == [1, 2]
    ref.write_text(" " + good)  # git ignores a broken ref
    assert seqs(repo) == [1]
    ref.write_text(good)
    assert seqs(repo) == [1, 2], "the mended ref counts again at once"


def test_a_symbolic_ref_whose_target_appears_later_counts_when_it_appears(repo: Path) -> None:
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "a"}')
    tag(repo, "govern-anchor/6", '{"seq": 6, "hash": "f"}')
    target = git(repo, "rev-parse", "refs/tags/govern-anchor/6").strip()
    (repo / ".git" / "refs" / "tags" / "govern-anchor" / "6").write_text("ref: refs/tags/hidden6\n")
    before = seqs(repo)
    git(repo, "update-ref", "refs/tags/hidden6", target)
    listed = git(repo, "for-each-ref", "--format=%(refname)", "refs/tags/govern-anchor/")
    assert ("refs/tags/govern-anchor/6" in listed) == (6 in seqs(repo)), f"as git lists them (before: {before})"


def test_a_replace_object_removed_shows_the_real_anchor_again(repo: Path) -> None:
    tag(repo, "govern-anchor/6", '{"seq": 6, "hash": "f"}')
    real = git(repo, "rev-parse", "refs/tags/govern-anchor/6").strip()
    fake = git(repo, "cat-file", "tag", real).replace('"seq": 6', '"seq": 2')
    forged = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", "tag", "-w", "--stdin"],
        input=fake,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    git(repo, "replace", "-f", real, forged)
    assert seqs(repo) == [2], "git shows the replacement"
    git(repo, "replace", "-d", real)
    assert seqs(repo) == [6], "and the real anchor once the replacement is gone"
