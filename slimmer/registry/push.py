"""`slimmer push`: an image layout to a registry, digests preserved (and signed, with a key:
sign.py).

For each destination: ping /v2/ (which settles authentication), then every blob (HEAD to skip
what the repository has; a cross-repository mount from each `mount_from` repository, and from
the destinations pushed before on the same registry; else an upload), then the manifests
bottom up: an index's children by digest, the top manifest or index by tag, each as the exact
bytes of the layout, checked against the Docker-Content-Digest the registry answers.

Uploads: blobs up to `chunk_size` are read, hashed, and sent with one POST and one PUT; bigger
ones go in PATCH chunks with Content-Range, hashed as they are read, and are committed (PUT
?digest=) only when the whole content hashed to its digest. When a chunk's connection drops,
the upload's status (GET on its location: Range) says where to resume; an upload the
registry no longer knows starts again.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from slimmer.image.model import Descriptor
from slimmer.registry.auth import AuthProblem, pull_scope, push_scope
from slimmer.registry.client import (
    Client,
    ClientOptions,
    Destination,
    RegistryError,
    Response,
    Transient,
    parse_destination,
)
from slimmer.registry.layout import BadLayout, Layout, Manifest, select

if TYPE_CHECKING:  # sign.py imports cryptography: only when signing
    from slimmer.registry.attach import Blob
    from slimmer.registry.sign import Signer


@dataclass(frozen=True, slots=True)
class PushOptions:
    client: ClientOptions = field(default_factory=ClientOptions)
    image: str | None = None  # which image of a layout holding several
    mount_from: tuple[str, ...] = ()  # repositories of the same registry that hold the blobs
    chunk_size: int = 16 << 20  # bigger blobs are uploaded in PATCH chunks of this size
    signer: Signer | None = None  # sign each pushed manifest, cosign's way (sign.py)
    sbom: Blob | None = None  # attach this SPDX document to each, cosign's way (attach.py)


@dataclass(frozen=True, slots=True)
class PushResult:
    destination: Destination
    digest: str
    media_type: str
    uploaded: int  # blobs sent
    existing: int  # blobs the repository had
    mounted: int  # blobs mounted from another repository
    bytes_uploaded: int
    manifests: int
    retries: int  # transient failures tried again while pushing to this destination
    bytes_existing: int = 0  # of the blobs the repository had (not sent)
    bytes_mounted: int = 0  # of the blobs mounted from another repository (not sent)
    signature: str = ""  # REGISTRY/REPO:sha256-HEX.sig, when signed
    sbom: str = ""  # REGISTRY/REPO:sha256-HEX.sbom, when an SBOM was attached

    @property
    def pinned(self) -> str:
        return self.destination.pinned(self.digest)


def push(archive: str, references: Sequence[str], options: PushOptions) -> tuple[PushResult, ...]:
    """Push the image in `archive` (an OCI layout tar or directory) to every reference
    (REGISTRY/REPO:TAG), in order; later destinations on the same registry mount the blobs
    from the earlier ones."""
    destinations = [parse_destination(r) for r in references]
    clients: dict[str, Client] = {}
    results: list[PushResult] = []
    started = options.client.clock()  # one deadline for every destination
    try:
        with Layout(archive) as layout:
            top = select(layout, options.image)
            for dest in destinations:
                client = clients.get(dest.registry)
                if client is None:
                    client = Client(dest, options.client, started)
                    clients[dest.registry] = client
                before = [d.repository for d in destinations[:len(results)]
                          if d.registry == dest.registry and d.repository != dest.repository]
                sources = tuple(dict.fromkeys([*before, *_repositories(options.mount_from,
                                                                        dest)]))
                result = _Pusher(client, dest, layout, options, sources).run(top)
                if options.signer is not None:
                    from slimmer.registry.sign import sign_pushed

                    result = replace(result, signature=sign_pushed(client, dest, result.digest,
                                                                   options.signer))
                if options.sbom is not None:
                    from slimmer.registry.attach import attach_sbom

                    result = replace(result, sbom=attach_sbom(client, dest, result.digest,
                                                              options.sbom))
                results.append(result)
    finally:
        for client in clients.values():
            client.close()
    return tuple(results)


def _repositories(names: Sequence[str], dest: Destination) -> tuple[str, ...]:
    """--mount-from values as repository names (REGISTRY/ of the destination stripped)."""
    return tuple(n.removeprefix(dest.registry + "/") for n in names
                 if n.removeprefix(dest.registry + "/") != dest.repository)


@dataclass(slots=True)
class _Upload:
    location: str | None = None
    offset: int = 0


@dataclass(slots=True)
class _Hasher:
    """A digest over a blob read in chunks that may be read again after a resume: each byte
    is hashed once, in order."""

    algorithm: str
    done: int = 0
    state: hashlib._Hash = field(init=False)

    def __post_init__(self) -> None:
        self.state = hashlib.new(self.algorithm)

    def feed(self, offset: int, data: bytes) -> None:
        assert offset <= self.done, "chunks are read in order"
        if offset + len(data) > self.done:
            self.state.update(data[self.done - offset:])
            self.done = offset + len(data)

    def digest(self) -> str:
        return f"{self.algorithm}:{self.state.hexdigest()}"


class _Pusher:
    def __init__(self, client: Client, dest: Destination, layout: Layout, options: PushOptions,
                 sources: tuple[str, ...]) -> None:
        self.client = client
        self.dest = dest
        self.layout = layout
        self.options = options
        self.sources = sources
        self.scopes = (push_scope(dest.repository),)
        self.counts = {"uploaded": 0, "existing": 0, "mounted": 0, "bytes": 0, "manifests": 0,
                       "existing_bytes": 0, "mounted_bytes": 0}

    def run(self, top: Manifest) -> PushResult:
        retries_before = self.client.retries
        self._check(self.client.request("GET", "/v2/", scopes=self.scopes), 200, "GET /v2/")
        seen: set[str] = set()
        for blob in top.all_blobs():
            if str(blob.digest) not in seen:
                seen.add(str(blob.digest))
                self._blob(blob)
        for child in top.children:
            self._manifest(child, str(child.digest))
        self._manifest(top, self.dest.tag)
        c = self.counts
        return PushResult(self.dest, str(top.digest), top.media_type, c["uploaded"], c["existing"],
                          c["mounted"], c["bytes"], c["manifests"],
                          self.client.retries - retries_before, c["existing_bytes"],
                          c["mounted_bytes"])

    def _api(self, suffix: str) -> str:
        return f"/v2/{self.dest.repository}/{suffix}"

    def _check(self, response: Response, expected: int, what: str) -> Response:
        if response.status != expected:
            raise RegistryError(f"{self.dest.registry}: {what}: {response.problem()}")
        return response

    # -- manifests --

    def _manifest(self, manifest: Manifest, reference: str) -> None:
        what = f"PUT manifest {self.dest.repository}:{reference}"
        answer = self.client.request(
            "PUT", self._api(f"manifests/{reference}"), scopes=self.scopes,
            headers={"Content-Type": manifest.media_type}, body=manifest.data)
        self._check(answer, 201, what)
        said = answer.header("Docker-Content-Digest")
        if said and said != str(manifest.digest):
            raise RegistryError(f"{self.dest.registry}: {what}: the registry stored it as "
                                f"{said}, not {manifest.digest}")
        self.counts["manifests"] += 1

    # -- blobs --

    def _blob(self, blob: Descriptor) -> None:
        answer = self.client.request("HEAD", self._api(f"blobs/{blob.digest}"),
                                     scopes=self.scopes)
        if answer.status == 200:
            self.counts["existing"] += 1
            self.counts["existing_bytes"] += blob.size
            return
        if answer.status != 404:
            self._check(answer, 200, f"HEAD blob {blob.digest}")
        upload = _Upload()
        for source in self.sources:
            location = self._mount(blob, source)
            if location is None:
                self.counts["mounted"] += 1
                self.counts["mounted_bytes"] += blob.size
                return
            upload.location = location  # the registry began an ordinary upload instead
        self._upload(blob, upload)
        self.counts["uploaded"] += 1
        self.counts["bytes"] += blob.size

    def _mount(self, blob: Descriptor, source: str) -> str | None:
        """None when mounted (201); the upload location the registry opened instead (202)."""
        query = urllib.parse.urlencode({"mount": str(blob.digest), "from": source})
        try:
            answer = self.client.request("POST", self._api(f"blobs/uploads/?{query}"),
                                         scopes=(*self.scopes, pull_scope(source)))
        except AuthProblem:
            return self._start()  # no pull access to the source: upload as usual
        if answer.status == 403:
            return self._start()
        if answer.status == 201:
            self._digest_said(answer, blob)
            return None
        return self._check(answer, 202, f"POST mount of {blob.digest}").header("Location") \
            or self._start()

    def _start(self) -> str:
        answer = self.client.request("POST", self._api("blobs/uploads/"), scopes=self.scopes)
        location = self._check(answer, 202, "POST blob upload").header("Location")
        if not location:
            raise RegistryError(f"{self.dest.registry}: POST blob upload: 202 without a "
                                "Location")
        return location

    def _upload(self, blob: Descriptor, upload: _Upload) -> None:
        small = blob.size <= self.options.chunk_size
        data = self._whole(blob) if small else b""
        hasher = _Hasher(blob.digest.algorithm)
        failures = 0
        while True:
            try:
                if upload.location is None:
                    upload.location, upload.offset = self._start(), 0
                if small:
                    self._commit(blob, upload.location, data)
                    return
                self._chunks(blob, upload, hasher)
                self._finish(blob, upload.location, hasher)
                return
            except Transient as exc:
                failures += 1
                if failures >= self.client.options.attempts:
                    raise RegistryError(f"{self.dest.registry}: uploading {blob.digest}: {exc} "
                                        f"(gave up after {failures} tries)") from None
                self.client.pause(failures, exc.wait, f"uploading {blob.digest}")
                self._resume_point(blob, upload, small, hasher.done)

    def _whole(self, blob: Descriptor) -> bytes:
        with self.layout.open(blob.digest.member) as fh:
            data = fh.read()
        hasher = _Hasher(blob.digest.algorithm)
        hasher.feed(0, data)
        self._verify(blob, hasher, len(data))
        return data

    def _verify(self, blob: Descriptor, hasher: _Hasher, size: int) -> None:
        if hasher.digest() != str(blob.digest) or size != blob.size:
            raise BadLayout(f"{self.layout.path}: blob {blob.digest}: its content ({size} "
                            f"bytes) hashes to {hasher.digest()}: not pushed")

    def _chunks(self, blob: Descriptor, upload: _Upload, hasher: _Hasher) -> None:
        with self.layout.open(blob.digest.member) as fh:
            fh.seek(upload.offset)
            while upload.offset < blob.size:
                chunk = fh.read(min(self.options.chunk_size, blob.size - upload.offset))
                if not chunk:
                    break
                hasher.feed(upload.offset, chunk)
                end = upload.offset + len(chunk) - 1
                assert upload.location is not None
                answer = self.client.exchange(
                    "PATCH", upload.location, scopes=self.scopes, body=chunk,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{upload.offset}-{end}"})
                self._check(answer, 202, f"PATCH {blob.digest} bytes {upload.offset}-{end}")
                upload.location = answer.header("Location") or upload.location
                upload.offset = end + 1

    def _finish(self, blob: Descriptor, location: str, hasher: _Hasher) -> None:
        if hasher.digest() != str(blob.digest) or hasher.done != blob.size:
            self.client.exchange("DELETE", location, scopes=self.scopes)  # drop the upload
            self._verify(blob, hasher, hasher.done)
        self._commit(blob, location, None)

    def _commit(self, blob: Descriptor, location: str, data: bytes | None) -> None:
        separator = "&" if urllib.parse.urlsplit(location).query else "?"
        url = f"{location}{separator}digest={urllib.parse.quote(str(blob.digest))}"
        headers = {"Content-Type": "application/octet-stream"}
        answer = self.client.exchange("PUT", url, scopes=self.scopes, body=data or b"",
                                      headers=headers)
        self._check(answer, 201, f"PUT blob {blob.digest}")
        self._digest_said(answer, blob)

    def _digest_said(self, answer: Response, blob: Descriptor) -> None:
        said = answer.header("Docker-Content-Digest")
        if said and said != str(blob.digest):
            raise RegistryError(f"{self.dest.registry}: blob {blob.digest} was stored as {said}")

    def _resume_point(self, blob: Descriptor, upload: _Upload, small: bool, sent: int) -> None:
        """After a failure: ask the registry how much of the upload it has (GET: Range) and
        go on from there, or start a new upload when it does not know it any more. A range
        beyond the `sent` bytes is a registry that lies: refused."""
        if small or upload.location is None:
            upload.location, upload.offset = None, 0
            return
        try:
            answer = self.client.exchange("GET", upload.location, scopes=self.scopes)
        except Transient:
            upload.location, upload.offset = None, 0
            return
        said = re.fullmatch(r"0-([0-9]{1,20})", answer.header("Range").strip())
        if answer.status != 204 or said is None or int(said.group(1)) == 0:
            upload.location, upload.offset = None, 0  # unknown, or "0-0" (0 or 1 byte?)
            return
        last = int(said.group(1))
        if last >= sent:
            raise RegistryError(f"{self.dest.registry}: uploading {blob.digest}: the registry "
                                f"says it holds bytes 0-{last} of the upload, but only {sent} "
                                "were sent: refused")
        upload.location = answer.header("Location") or upload.location
        upload.offset = last + 1
