"""Finding a model's weights: an explicit path, the local cache, or a verified download.

Weights live in the cache (:func:`canopy.cache.cache_dir`), in
``<cache>/weights/<model name>/<file name>``. A path given by the user, and the cache folder, may
hold a Hugging Face download (``model.safetensors``) or, for a model Meta publishes as separate head
and backbone files (``meta_files``), those two files side by side; a head file given alone is paired
with the backbone file beside it. Gated files on the Hub are downloaded with the token in the
source's ``token_env`` (``HF_TOKEN``) when it is set. Offline mode (``offline=True`` or
``CANOPY_OFFLINE=1``) never downloads. A download is streamed to a temporary file in the cache,
hashed on the way, checked against the published SHA-256 (or, where the publisher gives none,
read back as a checkpoint), and only then renamed into place: a failed or corrupt download leaves
nothing in the cache.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from canopy.cache import cache_dir
from canopy.io.atomic import atomic_path
from canopy.errors import (
    CanopyError,
    ChecksumMismatchError,
    DownloadError,
    OfflineError,
    WeightsNotFoundError,
)
from canopy.models.checkpoint import read_state_dict
from canopy.models.registry import ModelSpec, WeightSource

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) while a download runs."""

_CHUNK = 1 << 20
_DIGESTS = "sha256.json"  # in the cache directory: {absolute path: [size, mtime_ns, sha256]}


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a model's weights come from and how outputs should name them.

    ``path`` is None for a random initialisation; ``identity`` is the file's SHA-256, or
    ``random(seed=N)``. A model published as separate files has its head in ``path`` and its
    backbone in ``backbone_path`` (SHA-256 ``backbone_sha256``).
    """

    path: Path | None
    identity: str
    seed: int | None = None
    backbone_path: Path | None = None
    backbone_sha256: str | None = None

    @property
    def is_random(self) -> bool:
        """True for a seeded random initialisation."""
        return self.path is None

    @property
    def backbone_identity(self) -> str:
        """The identity of the backbone's weights: its own file's SHA-256 where it has one, else ``identity``."""
        return self.backbone_sha256 or self.identity


def offline_mode(offline: bool | None = None) -> bool:
    """Whether downloads are forbidden: ``offline`` if given, else ``CANOPY_OFFLINE``."""
    if offline is not None:
        return offline
    return os.environ.get("CANOPY_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cached_path(spec: ModelSpec, source: WeightSource) -> Path:
    """Where one published file of a model lives in the cache."""
    return cache_dir() / "weights" / spec.name / source.filename


def find_cached(spec: ModelSpec) -> Path | None:
    """The first of a model's published files already in the cache, if any; for a model published as
    separate files, the head file when the backbone file is there too.

    Parameters
    ----------
    spec
        The model.

    Returns
    -------
    Path or None
    """
    for source in spec.weights:
        path = cached_path(spec, source)
        if path.is_file():
            return path
    if spec.meta_files:
        folder = cache_dir() / "weights" / spec.name
        head, backbone = (_beside(folder, pattern) for pattern in spec.meta_files)
        if head is not None and backbone is not None:
            return head
    return None


def _beside(folder: Path, pattern: str) -> Path | None:
    """The first file in ``folder`` whose name matches ``pattern``, in name order."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.is_file() and fnmatch.fnmatch(p.name, pattern)), None)


def _expected_files(spec: ModelSpec) -> str:
    """The files a model's weights may come as, for messages."""
    names = [source.filename for source in spec.weights]
    if spec.meta_files:
        names.append(f"Meta's {spec.meta_files[0]} with {spec.meta_files[1]}")
    return " or ".join(names) or "a checkpoint file"


def _resolve_file(spec: ModelSpec, path: Path) -> ResolvedWeights:
    """A weights file the user named or the cache holds; Meta's head file is paired with the backbone file beside it."""
    if spec.meta_files and fnmatch.fnmatch(path.name, spec.meta_files[0]):
        backbone = _beside(path.parent, spec.meta_files[1])
        if backbone is None:
            raise WeightsNotFoundError(
                f"Weights file {path} is Meta's head file for {spec.name}, and no backbone file {spec.meta_files[1]} "
                f"is beside it; put Meta's backbone file in {path.parent}, or pass the folder that holds both."
            )
        return ResolvedWeights(path, sha256_of(path), backbone_path=backbone, backbone_sha256=sha256_of(backbone))
    return ResolvedWeights(path=path, identity=sha256_of(path))


def _resolve_folder(spec: ModelSpec, folder: Path) -> ResolvedWeights:
    """The weights a folder holds: a published file by name, a Hugging Face ``model.safetensors``, or Meta's files."""
    for name in [source.filename for source in spec.weights] + ["model.safetensors"]:
        if (folder / name).is_file():
            return _resolve_file(spec, folder / name)
    head = _beside(folder, spec.meta_files[0]) if spec.meta_files else None
    if head is not None:
        return _resolve_file(spec, head)
    raise WeightsNotFoundError(
        f"Folder {folder} holds no weights for {spec.name}; it should hold {_expected_files(spec)}."
    )


def _with_obtain(spec: ModelSpec, message: str) -> str:
    """A message about missing weights, followed by how to obtain gated ones where the model says."""
    return f"{message} {spec.obtain}" if spec.obtain else message


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, remembered in the cache directory by path, size and modification time.

    A map's tags name its weights by their SHA-256; hashing a 1-3 GB checkpoint at every load took
    longer than reading it (docs/benchmarks.md), so each file is hashed once until it changes. The
    record is best-effort: a cache directory that cannot be written only costs the hashing again.
    """
    path = Path(path).resolve()
    stat = path.stat()
    seen = [stat.st_size, stat.st_mtime_ns]
    known = _known_digests()
    entry = known.get(str(path))
    if isinstance(entry, list) and entry[:2] == seen:
        return str(entry[2])
    digest = _hash_file(path)
    known[str(path)] = [*seen, digest]
    try:
        target = cache_dir() / _DIGESTS
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(known))
    except OSError:
        log.debug("could not record the SHA-256 of %s", path, exc_info=True)
    return digest


def _known_digests() -> dict:
    """The SHA-256 records of :func:`sha256_of`, or none if there are none or they cannot be read."""
    try:
        known = json.loads((cache_dir() / _DIGESTS).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _hash_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_random(weights: str) -> int | None:
    """The seed of a ``random`` or ``random(seed=N)`` weights value, or None for anything else."""
    text = weights.strip().replace(" ", "")
    if text == "random":
        return 0
    if text.startswith("random(seed=") and text.endswith(")"):
        try:
            return int(text[len("random(seed=") : -1])
        except ValueError:
            return None
    return None


def resolve_weights(
    spec: ModelSpec,
    weights: str | os.PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
) -> ResolvedWeights:
    """Find a model's weights in the documented order.

    Parameters
    ----------
    spec
        The model.
    weights
        A path to a checkpoint, or to a folder holding one (a Hugging Face download, or Meta's head
        and backbone files); ``"random"`` or ``"random(seed=N)"`` for a seeded random
        initialisation (tests and benchmarks only); None for the cache, then a download.
    offline
        Forbid downloads; None reads ``CANOPY_OFFLINE``.
    progress
        Called during a download with (bytes done, total bytes or None).

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    WeightsNotFoundError
        If an explicit path does not exist, or the model has no published weights and none are cached.
    OfflineError
        If a download is needed in offline mode; the message says which file to place where.
    DownloadError
        If the download fails or its checksum is wrong.
    """
    if weights is not None:
        seed = parse_random(str(weights))
        if seed is not None:
            return ResolvedWeights(path=None, identity=f"random(seed={seed})", seed=seed)
        path = Path(weights).expanduser()
        if path.is_dir():
            return _resolve_folder(spec, path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"Weights file {path} does not exist; pass the path of a checkpoint, or 'random' for tests."
            )
        return _resolve_file(spec, path)
    cached = find_cached(spec)
    if cached is not None:
        return _resolve_file(spec, cached)
    if not spec.weights:
        raise WeightsNotFoundError(
            f"Model {spec.name} has no published weights; pass --weights PATH (e.g. a file from `canopy train`)."
        )
    source = spec.weights[0]
    target = cached_path(spec, source)
    if offline_mode(offline):
        raise OfflineError(
            _with_obtain(
                spec,
                f"Weights for {spec.name} are not cached and offline mode is on; download {source.url} "
                f"and place it at {target} (or put {_expected_files(spec)} in {target.parent}), or pass --weights PATH.",
            )
        )
    try:
        download(source, target, progress=progress)
    except DownloadError as exc:
        raise type(exc)(_with_obtain(spec, str(exc))) from None
    return ResolvedWeights(path=target, identity=sha256_of(target))


def download(
    source: WeightSource,
    target: Path,
    *,
    progress: ProgressCallback | None = None,
    verify: Callable[[Path], object] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download a published file to ``target`` atomically, checking its SHA-256.

    Parameters
    ----------
    source
        URL and expected SHA-256 (None when the publisher gives none).
    target
        Final path; its directory is created.
    progress
        Called with (bytes done, total bytes or None) after each chunk.
    verify
        Called on the temporary file when no SHA-256 is published, to reject a file that is not a
        checkpoint; defaults to reading it as a state dict.
    timeout
        Socket timeout in seconds.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    DownloadError
        On a network or HTTP error, a short read, or a file that fails ``verify``.
    ChecksumMismatchError
        If the SHA-256 differs from the published one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(source.url)
    token = os.environ.get(source.token_env, "").strip() if source.token_env else ""
    if token:  # not sent on to where the Hub redirects: its signed CDN links refuse a second credential
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        done = 0
        log.info("downloading %s to %s", source.url, target)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) and source.token_env:
                how = "the token refused" if token else f"no {source.token_env} set"
                raise DownloadError(
                    f"Download of {source.url} was refused (HTTP {exc.code}, {how}): the file is gated; accept its "
                    f"licence on its page and set {source.token_env} to a token of that account."
                ) from None
            raise DownloadError(f"Download of {source.url} failed ({exc}); check the network and retry.") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(f"Download of {source.url} failed ({exc}); check the network and retry.") from None
        if total is not None and done != total:
            raise DownloadError(f"Download of {source.url} stopped after {done} of {total} bytes; retry.")
        if source.sha256 is not None and digest.hexdigest() != source.sha256.lower():
            raise ChecksumMismatchError(
                f"Download of {source.url} has SHA-256 {digest.hexdigest()}, not the published "
                f"{source.sha256}; nothing was kept. Retry, or report it if it persists."
            )
        if source.sha256 is None:
            _verify_checkpoint(tmp, source, verify)
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _verify_checkpoint(path: Path, source: WeightSource, verify: Callable[[Path], object] | None) -> None:
    """Reject a download with no published hash unless it reads back as a checkpoint."""
    if verify is None:
        verify = read_state_dict
    try:
        verify(path)
    except CanopyError as exc:
        raise DownloadError(f"Download of {source.url} is not a usable checkpoint ({exc}); nothing was kept.") from None
