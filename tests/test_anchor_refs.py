"""The anchors a write is checked against are read from git's ref files, and git is asked only when they changed:
a server checks them before every write, and a git process per request was most of a deployment's time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from govern.adapters import git as git_adapter


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


def shown(tags: list[git_adapter.Tag]) -> list[tuple[str, str]]:
    return [(t.name, t.message) for t in tags]


def test_the_refs_read_from_files_are_the_refs_git_lists_loose_and_packed(repo: Path) -> None:
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "a"}')
    tag(repo, "govern-anchor/2", '{"seq": 2, "hash": "b"}')
    tag(repo, "other", "not an anchor")
    git(repo, "pack-refs", "--all")
    tag(repo, "govern-anchor/3", '{"seq": 3, "hash": "c"}')  # loose, beside the packed ones
    listed = git(repo, "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/tags/govern-anchor/")
    expected = dict(line.split(" ") for line in listed.splitlines())
    assert git_adapter.tag_refs(repo, "govern-anchor/") == expected
    assert shown(git_adapter.tags_under(repo, "govern-anchor/")) == shown(git_adapter.tags(repo, "govern-anchor/*"))


def test_git_is_asked_again_only_when_a_tag_under_the_prefix_changed(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = git_adapter.tags
    monkeypatch.setattr(git_adapter, "tags", lambda root, pattern: asked.append(pattern) or real(root, pattern))
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "a"}')
    assert shown(git_adapter.tags_under(repo, "govern-anchor/")) == [("govern-anchor/1", '{"seq": 1, "hash": "a"}')]
    assert shown(git_adapter.tags_under(repo, "govern-anchor/")) == [("govern-anchor/1", '{"seq": 1, "hash": "a"}')]
    assert len(asked) == 1, "the same refs: the same tags, without a git process"
    tag(repo, "govern-anchor/2", '{"seq": 2, "hash": "b"}')
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == ["govern-anchor/1", "govern-anchor/2"]
    git(repo, "tag", "-d", "govern-anchor/1")
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "forged"}')  # deleted and made again: another object
    assert ("govern-anchor/1", '{"seq": 1, "hash": "forged"}') in shown(git_adapter.tags_under(repo, "govern-anchor/"))
    git(repo, "tag", "-d", "govern-anchor/2")
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == ["govern-anchor/1"]
    assert len(asked) == 4


def test_outside_a_repository_git_answers_as_before(tmp_path: Path) -> None:
    assert git_adapter.tag_refs(tmp_path, "govern-anchor/") is None
    with pytest.raises(Exception, match="for-each-ref"):
        git_adapter.tags_under(tmp_path, "govern-anchor/")


def test_a_linked_worktree_reads_the_common_refs(repo: Path, tmp_path: Path) -> None:
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "a"}')
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", str(linked))
    assert list(git_adapter.tag_refs(linked, "govern-anchor/")) == ["govern-anchor/1"]


def test_a_ref_file_git_finds_broken_is_not_taken_for_the_good_one(repo: Path) -> None:
    """The security review's toggle: ' <sha>' (a broken ref git ignores) and then '<sha>' again read the same to a
    parser that strips; the cache must ask git again, or it keeps the answer without the anchor."""
    tag(repo, "govern-anchor/1", '{"seq": 1, "hash": "a"}')
    tag(repo, "govern-anchor/2", '{"seq": 2, "hash": "b"}')
    ref = repo / ".git" / "refs" / "tags" / "govern-anchor" / "2"
    good = ref.read_text()
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == ["govern-anchor/1", "govern-anchor/2"]
    ref.write_text(" " + good)
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == [
        t.name for t in git_adapter.tags(repo, "govern-anchor/*")
    ]
    ref.write_text(good)
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == ["govern-anchor/1", "govern-anchor/2"]


def test_a_packed_ref_moved_out_of_order_and_back_is_asked_of_git(repo: Path) -> None:
    for seq in (1, 2, 3):
        tag(repo, f"govern-anchor/{seq}", f'{{"seq": {seq}, "hash": "h"}}')
    git(repo, "pack-refs", "--all")
    packed = repo / ".git" / "packed-refs"
    original = packed.read_text()
    names = ["govern-anchor/1", "govern-anchor/2", "govern-anchor/3"]
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == names
    lines = original.splitlines(keepends=True)
    moved = next(i for i, line in enumerate(lines) if line.rstrip().endswith("refs/tags/govern-anchor/2"))
    shuffled = [lines[0], *lines[moved : moved + 2], *lines[1:moved], *lines[moved + 2 :]]
    packed.write_text("".join(shuffled))
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == [
        t.name for t in git_adapter.tags(repo, "govern-anchor/*")
    ]
    packed.write_text(original)
    assert [t.name for t in git_adapter.tags_under(repo, "govern-anchor/")] == names


def test_refs_found_through_a_commondir_file_are_the_ones_git_reads(repo: Path, tmp_path: Path) -> None:
    tag(repo, "govern-anchor/5", '{"seq": 5, "hash": "a"}')
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / ".git" / "commondir").write_text(str(repo / ".git") + "\n")
    assert [t.name for t in git_adapter.tags_under(other, "govern-anchor/")] == ["govern-anchor/5"]
    tag(repo, "govern-anchor/9", '{"seq": 9, "hash": "b"}')
    assert [t.name for t in git_adapter.tags_under(other, "govern-anchor/")] == [
        t.name for t in git_adapter.tags(other, "govern-anchor/*")
    ]
    assert "govern-anchor/9" in [t.name for t in git_adapter.tags_under(other, "govern-anchor/")]
