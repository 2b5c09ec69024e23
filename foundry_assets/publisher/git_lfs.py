"""Git LFS registry (`git+file://`, `git+ssh://`, `git+https://` + `#branch`): a tag is an annotated git tag.

Each publish is one commit on the branch whose tree is exactly the artifact plus a `.gitattributes` that routes
weights (`*.safetensors`, `*.bin`, `*.gguf`) and every file over 10 MB through LFS. Branch, tag and LFS objects go up
in one `git push --atomic` (LFS's pre-push hook uploads the objects before any ref moves), so a tag exists complete
or not at all. Verification clones the tag into a fresh folder with LFS smudge on and hashes every file.

Needs the `git` and `git-lfs` executables (Debian packages `git`, `git-lfs`). The commit identity defaults to
`coreason-model-foundry <foundry@localhost>`; `GIT_AUTHOR_*`/`GIT_COMMITTER_*` environment variables override it.
Authentication is git's own (ssh agent, credential helper); a URI holding a credential is refused, and git's error
text is redacted before it is raised.
"""

import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from foundry_assets.errors import PublishError
from foundry_assets.hashing import sha256_file, tree_digest
from foundry_assets.publisher.base import (
    HASH_MANIFEST,
    PUBLISHED_FILE_MODE,
    RegistryBackend,
    parse_hash_manifest,
)
from foundry_assets.redact import redact

log = logging.getLogger(__name__)
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.gguf")
"""Files stored through LFS whatever their size."""
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
"""Any other file at least this large is stored through LFS too."""
_GIT_FLAGS = (
    "-c", "user.name=coreason-model-foundry", "-c", "user.email=foundry@localhost",
    "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false", "-c", "init.defaultBranch=main",
    "-c", "advice.detachedHead=false",
)  # fmt: skip


def _attribute_pattern(name: str) -> str:
    """A `.gitattributes` pattern matching exactly the file `name` (anchored, special characters escaped)."""
    escaped = re.sub(r"([*?\[\]\\!#])", r"\\\1", name)
    return "/" + escaped.replace(" ", "[[:space:]]")


def _needs_lfs(name: str, size: int) -> bool:
    """Whether a file goes through LFS: a weights extension, or at least `LFS_SIZE_THRESHOLD` bytes."""
    return size >= LFS_SIZE_THRESHOLD or any(Path(name).match(p) for p in LFS_PATTERNS)


class GitLfsRegistry(RegistryBackend):
    """Registry in a git repository with LFS, reached by the git executable."""

    timeout_s: float = 3600.0

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        parsed = urlparse(uri)
        if not parsed.scheme.startswith("git+") or not parsed.path.strip("/"):
            raise PublishError(f"Git registry {uri!r} is not of the form git+https://HOST/REPO.git[#BRANCH].")
        remote = parsed._replace(scheme=parsed.scheme[4:], fragment="")
        self.remote = urlunparse(remote)
        self.branch = parsed.fragment or None
        self.safe_remote = "git+" + self.remote  # no credentials: `RegistryBackend` refuses a URI holding one

    @classmethod
    def scheme(cls) -> str:
        """The main scheme (see `schemes`)."""
        return "git+https"

    @classmethod
    def schemes(cls) -> tuple[str, ...]:
        """Git over a local path, ssh or https."""
        return ("git+file", "git+ssh", "git+https")

    def tag_uri(self, tag: str) -> str:
        """`git+https://host/repo.git@TAG` (pip's form)."""
        return f"{self.safe_remote}@{tag}"

    def _git(self, *args: str, cwd: Path, skip_smudge: bool = False) -> str:
        """Run one git command; a failure becomes a PublishError with git's last words, every URL in them redacted."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        if skip_smudge:
            env["GIT_LFS_SKIP_SMUDGE"] = "1"
        if shutil.which("git") is None:
            raise PublishError(
                "the git executable is not installed; install the Debian packages git and git-lfs."
            )
        try:
            done = subprocess.run(
                ["git", *_GIT_FLAGS, *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise PublishError(
                f"git {args[0]} against {self.safe_remote} timed out after {e.timeout} s"
            ) from None
        if done.returncode != 0:
            # redacted: git quotes remote URLs, and an `insteadOf` rule or a redirect may have put a token in one
            output = redact((done.stderr or done.stdout).strip())
            if "'lfs' is not a git command" in output:
                output = "git-lfs is not installed; install the Debian package git-lfs"
            raise PublishError(f"git {args[0]} failed (exit {done.returncode}): {output[-500:]}")
        return done.stdout

    def _repo(self, folder: Path, *, smudge: bool) -> Path:
        """An empty repository in `folder` with LFS hooks and `origin` pointing at the registry."""
        self._git("init", "-q", str(folder), cwd=folder.parent)
        self._git("lfs", "install", "--local", *([] if smudge else ["--skip-smudge"]), cwd=folder)
        self._git("remote", "add", "origin", self.remote, cwd=folder)
        return folder

    def _fetch_tag(self, repo: Path, tag: str) -> None:
        """Fetch only the tag's commit (depth 1)."""
        self._git("fetch", "-q", "--depth", "1", "origin", f"refs/tags/{tag}:refs/tags/{tag}", cwd=repo)

    def _target_branch(self, repo: Path) -> str:
        """The branch to commit on: the URI's `#branch`, else the remote's default branch, else main."""
        if self.branch:
            return self.branch
        symref = self._git("ls-remote", "--symref", "origin", "HEAD", cwd=repo)
        found = re.search(r"^ref: refs/heads/(\S+)\tHEAD$", symref, flags=re.MULTILINE)
        return found.group(1) if found else "main"

    def existing_hashes(self, tag: str) -> dict[str, str] | None:
        """The tag's MANIFEST.sha256 ({} when the tag lacks one), or None when the remote has no such tag."""
        with tempfile.TemporaryDirectory(prefix="foundry-git-") as tmp:
            repo = self._repo(Path(tmp) / "repo", smudge=False)
            if not self._git("ls-remote", "--tags", "origin", f"refs/tags/{tag}", cwd=repo).strip():
                return None
            self._fetch_tag(repo, tag)
            try:
                listing = self._git("show", f"refs/tags/{tag}:{HASH_MANIFEST}", cwd=repo)
            except PublishError:
                return {}  # a tag this foundry did not write is never "the same content"
            return parse_hash_manifest(listing)

    def upload(self, staging: Path, tag: str, files: dict[str, str]) -> None:
        """Commit the artifact as the branch's whole tree, tag it, and push branch, tag and LFS objects at once."""
        if ".gitattributes" in files:
            raise PublishError("the artifact holds a .gitattributes file; the git registry writes its own.")
        with tempfile.TemporaryDirectory(prefix="foundry-git-") as tmp:
            repo = self._repo(Path(tmp) / "repo", smudge=False)
            branch = self._target_branch(repo)
            if self._git("ls-remote", "--heads", "origin", f"refs/heads/{branch}", cwd=repo).strip():
                self._git("fetch", "-q", "--depth", "1", "origin", f"refs/heads/{branch}", cwd=repo)
                self._git("checkout", "-q", "-B", branch, "FETCH_HEAD", cwd=repo, skip_smudge=True)
                self._git("rm", "-r", "-q", "--ignore-unmatch", "--", ".", cwd=repo)
            else:
                self._git("checkout", "-q", "--orphan", branch, cwd=repo)
            shutil.copytree(staging, repo, dirs_exist_ok=True)
            for name in files:  # git keeps the executable bit: a staged 0755 file would check out 0755
                os.chmod(repo / name, PUBLISHED_FILE_MODE)
            names = sorted([*files, HASH_MANIFEST])
            lfs = [n for n in names if _needs_lfs(n, (staging / n).stat().st_size)]
            attributes = [f"{p} filter=lfs diff=lfs merge=lfs -text" for p in LFS_PATTERNS]
            attributes += [f"{_attribute_pattern(n)} filter=lfs diff=lfs merge=lfs -text" for n in lfs]
            (repo / ".gitattributes").write_text("\n".join(attributes) + "\n", encoding="utf-8")
            self._git("add", "-A", cwd=repo)
            message = f"Publish {tag}\n\nartifact sha256 {tree_digest(files)} ({len(files)} files)"
            self._git("commit", "-q", "--allow-empty", "-m", message, cwd=repo)
            self._git("tag", "-a", tag, "-m", message, cwd=repo)
            log.info(
                "Pushing %s (%d files, %d through LFS) to %s", tag, len(names), len(lfs), self.safe_remote
            )
            self._git(
                "push", "-q", "--atomic", "origin", f"HEAD:refs/heads/{branch}", f"refs/tags/{tag}", cwd=repo
            )

    def remote_hashes(self, tag: str) -> dict[str, str]:
        """Clone the tag into a fresh folder with LFS smudge and hash every file (weights must be LFS objects)."""
        with tempfile.TemporaryDirectory(prefix="foundry-git-") as tmp:
            repo = self._repo(Path(tmp) / "repo", smudge=True)
            self._fetch_tag(repo, tag)
            self._git("checkout", "-q", f"refs/tags/{tag}", cwd=repo)
            hashes = {
                p.relative_to(repo).as_posix(): sha256_file(p)
                for p in sorted(repo.rglob("*"))
                if p.is_file()
                and p.relative_to(repo).parts[0] != ".git"
                and p.relative_to(repo).as_posix() != ".gitattributes"
            }
            in_lfs = set(self._git("lfs", "ls-files", "--name-only", cwd=repo).splitlines())
            not_lfs = [n for n in hashes if _needs_lfs(n, (repo / n).stat().st_size) and n not in in_lfs]
            if not_lfs:
                raise PublishError(
                    f"{self.tag_uri(tag)} stores {not_lfs[:5]} as plain git blobs, not LFS objects."
                )
            return hashes

    def download(self, tag: str, files: dict[str, str], dest: Path) -> None:
        """Check the tag out without LFS content, pull only the listed files' LFS objects, and copy them to `dest`."""
        with tempfile.TemporaryDirectory(prefix="foundry-git-") as tmp:
            repo = self._repo(Path(tmp) / "repo", smudge=False)
            self._fetch_tag(repo, tag)
            self._git("checkout", "-q", f"refs/tags/{tag}", cwd=repo, skip_smudge=True)
            oids = {  # `git lfs ls-files --long`: "<oid> <-|*> <path>"
                line[67:]: line[:64]
                for line in self._git("lfs", "ls-files", "--long", cwd=repo).splitlines()
                if len(line) > 67
            }
            wanted = sorted(name for name in files if name in oids)
            try:
                if any(re.search(r"[,*?\[\]\\]", name) for name in wanted):
                    self._git(
                        "lfs", "pull", "origin", cwd=repo
                    )  # names an --include list cannot spell: pull all
                elif wanted:
                    self._git(
                        "lfs", "pull", "origin", "--include", ",".join(wanted), "--exclude", "", cwd=repo
                    )
            except PublishError as e:
                named = [name for name in wanted if oids[name] in str(e)] or wanted
                raise PublishError(
                    f"the LFS objects of {named[:5]} could not be fetched intact from {self.tag_uri(tag)} "
                    f"(missing or damaged in the registry): {e}"
                ) from e
            for name in sorted(files):
                source, target = repo / name, dest / name
                if not source.is_file():
                    raise PublishError(
                        f"{name!r} is listed in the tag's {HASH_MANIFEST} but missing from {self.tag_uri(tag)}"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
