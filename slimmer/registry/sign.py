"""Signatures in cosign's format: `push --sign-key` signs the pushed manifest digest, and
`verify REGISTRY/REPO@DIGEST --key` checks such a signature (cosign's or ours).

cosign's specs/SIGNATURE_SPEC.md: the payload is a "simple signing" JSON document naming the
repository and the manifest digest; it is stored as a blob, the one layer (media type
`application/vnd.dev.cosign.simplesigning.v1+json`) of an OCI image manifest tagged
`sha256-<hex>.sig` in the image's repository; the signature is the base64 of the layer's
annotation `dev.cosignproject.cosign/signature`. ECDSA P-256 signs the SHA-256 of the payload
(an ASN.1 DER signature, what `openssl dgst -sha256 -sign` makes); Ed25519 signs the payload
itself (`openssl pkeyutl -sign -rawin`). The image around it is attach.py's.

A `.sig` manifest already at that tag keeps its signatures (other keys'), ours added, as
cosign does; signing again with the same key changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from slimmer.errors import SlimmerError, printable
from slimmer.fileio import read_small_file
from slimmer.image.model import DOCKER_MANIFEST, OCI_MANIFEST, canonical_json
from slimmer.registry.attach import Blob, attachment, expect, image_of, push_attachment, tag_for
from slimmer.registry.auth import pull_scope, push_scope
from slimmer.registry.client import Client, Destination, parse_destination

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE = "dev.cosignproject.cosign/signature"
COSIGN_TYPE = "cosign container image signature"
KEY_LIMIT = 64 << 10  # a PEM key is a few hundred bytes

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class SignatureProblem(SlimmerError):
    """A key that cannot be used, or a signature that is missing or does not verify."""


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key read from PEM: ECDSA P-256 or Ed25519."""

    key: PrivateKey
    source: str  # the file it came from, for messages

    def sign(self, payload: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(payload, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(payload)


def load_signer(path: str, password: bytes | None = None) -> Signer:
    """The private key in PEM file `path` (PKCS#8 or SEC1; encrypted: `password`)."""
    data = read_small_file(path, "signing key", KEY_LIMIT)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise SignatureProblem(f"{path}: the key is encrypted: name the environment "
                                   "variable holding its password with --sign-password-env"
                                   ) from None
        raise SignatureProblem(f"{path}: the key is not encrypted, but a password was given"
                               ) from None
    except (ValueError, UnsupportedAlgorithm):
        problem = ("cannot be decrypted with the password given" if password is not None
                   and b"ENCRYPTED" in data else "is not a PEM private key")
        raise SignatureProblem(f"{path}: {problem}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
            isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
        return Signer(key, path)
    raise SignatureProblem(f"{path}: {_kind(key)}: signing takes an ECDSA P-256 or Ed25519 key")


def load_public_key(path: str) -> PublicKey:
    data = read_small_file(path, "public key", KEY_LIMIT)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureProblem(f"{path}: not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        return key
    raise SignatureProblem(f"{path}: {_kind(key)}: verifying takes an ECDSA P-256 or Ed25519 "
                           "key")


def _kind(key: object) -> str:
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"an ECDSA key on {curve.name}"
    for kind, types in (("an RSA key", (rsa.RSAPrivateKey, rsa.RSAPublicKey)),
                        ("a DSA key", (dsa.DSAPrivateKey, dsa.DSAPublicKey)),
                        ("an Ed448 key", (ed448.Ed448PrivateKey, ed448.Ed448PublicKey))):
        if isinstance(key, types):
            return kind
    return "a key of another kind"


def verifies(key: PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


# ---- the documents -------------------------------------------------------------------------


def identity(dest: Destination) -> str:
    """The repository as cosign names it in the payload (go-containerregistry's Context)."""
    registry = "index.docker.io" if dest.registry == "docker.io" else dest.registry
    return f"{registry}/{dest.repository}"


def payload(dest: Destination, digest: str) -> bytes:
    """The simple-signing payload for manifest `digest` in `dest`'s repository, as cosign
    writes it (Go's encoding/json: the keys happen to be sorted, no spaces)."""
    return canonical_json({"critical": {"identity": {"docker-reference": identity(dest)},
                                        "image": {"docker-manifest-digest": digest},
                                        "type": COSIGN_TYPE},
                           "optional": None})


def signature_tag(digest: str) -> str:
    return tag_for(digest, "sig")


def signature_manifest(signed: bytes, signature: bytes) -> tuple[Blob, Blob, bytes]:
    """(config, payload layer, manifest) of a .sig image holding one signature."""
    return attachment(Blob(PAYLOAD_TYPE, signed),
                      {SIGNATURE: base64.b64encode(signature).decode()})


# ---- pushing a signature -------------------------------------------------------------------


def sign_pushed(client: Client, dest: Destination, digest: str, signer: Signer) -> str:
    """Sign manifest `digest` of `dest`'s repository and push the .sig image beside it, its
    signatures (other keys') kept and ours added, as cosign does; nothing is pushed when one
    of them is already this key's over the same payload. Returns the reference of the
    signature (REGISTRY/REPO:sha256-HEX.sig)."""
    signed = payload(dest, digest)
    tag = signature_tag(digest)
    ours = Blob(PAYLOAD_TYPE, signed)
    kept = _existing(client, dest, tag, ours, signer)
    if kept is None:
        return f"{dest.registry}/{dest.repository}:{tag}"
    layer = ours.descriptor({SIGNATURE: base64.b64encode(signer.sign(signed)).decode()})
    config, manifest = image_of([*kept, layer])
    return push_attachment(client, dest, tag, (config, ours, manifest))


def _existing(client: Client, dest: Destination, tag: str, ours: Blob,
              signer: Signer) -> list[dict[str, Any]] | None:
    """The signature layers at `tag` to keep (none when there is no .sig, or not a manifest
    of them), or None when one is this key's signature of `ours` already."""
    answer = client.request("GET", f"/v2/{dest.repository}/manifests/{tag}",
                            scopes=(push_scope(dest.repository),),
                            headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    if answer.status != 200:
        return []
    try:
        layers = json.loads(answer.body)["layers"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return []
    kept = [layer for layer in layers if isinstance(layer, dict)
            and layer.get("mediaType") == PAYLOAD_TYPE and isinstance(layer.get("digest"), str)
            and isinstance(layer.get("size"), int)] if isinstance(layers, list) else []
    public = signer.key.public_key()
    for layer in kept:
        notes = layer.get("annotations")
        text = notes.get(SIGNATURE) if isinstance(notes, dict) else None
        if layer["digest"] == ours.digest and isinstance(text, str):
            try:
                signature = base64.b64decode(text, validate=True)
            except binascii.Error:
                continue
            if verifies(public, signature, ours.data):
                return None
    return kept


# ---- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    reference: str  # REGISTRY/REPO@DIGEST
    signature: str  # where the signature was found (REGISTRY/REPO:sha256-HEX.sig)
    signatures: int  # how many the .sig manifest holds


def parse_signed_reference(text: str) -> tuple[Destination, str | None]:
    """REGISTRY/REPO@sha256:HEX (or REGISTRY/REPO[:TAG], resolved at the registry)."""
    name, at, digest = text.partition("@")
    if at and not (digest.startswith("sha256:") and len(digest) == 71
                   and all(c in "0123456789abcdef" for c in digest[7:])):
        raise SignatureProblem(f"{text}: {digest!r} is not a sha256 digest")
    return parse_destination(name), digest if at else None


def verify_signature(client: Client, dest: Destination, digest: str | None, key: PublicKey,
                     key_name: str) -> Checked:
    """Fetch the .sig manifest of `digest` (a tag's: resolved first) and check that one of its
    signatures verifies with `key` over its payload, and that the payload names `digest` and
    the repository."""
    scopes = (pull_scope(dest.repository),)
    if digest is None:
        digest = _resolve(client, dest, scopes)
    shown = f"{dest.registry}/{dest.repository}@{digest}"
    tag = signature_tag(digest)
    where = f"{dest.registry}/{dest.repository}:{tag}"
    answer = client.request("GET", f"/v2/{dest.repository}/manifests/{tag}", scopes=scopes,
                            headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    if answer.status == 404:
        raise SignatureProblem(f"{shown}: not signed ({where} not found)")
    expect(answer, 200, dest, f"GET manifest {dest.repository}:{tag}")
    layers = _signature_layers(answer.body, where)
    payloads: list[bytes] = []
    for layer_digest, signature in layers:
        data = _blob(client, dest, layer_digest, scopes)
        if signature is not None and verifies(key, signature, data):
            payloads.append(data)
    if not payloads:
        count = len(layers)
        # `where` is not repeated: the digest twice would not fit a line (its .sig tag is
        # REPO:sha256-HEX.sig, docs/push.md)
        raise SignatureProblem(f"{shown}: no signature of its .sig tag verifies with {key_name} "
                               f"({count} signature{'s' if count != 1 else ''} checked)")
    problems = [p for p in (_claims(data, dest, digest) for data in payloads) if p]
    if len(problems) == len(payloads):
        raise SignatureProblem(f"{shown}: signed with {key_name}, but its payload "
                               f"{problems[0]}")
    return Checked(shown, where, len(layers))


def _resolve(client: Client, dest: Destination, scopes: tuple[str, ...]) -> str:
    answer = client.request("GET", f"/v2/{dest.repository}/manifests/{dest.tag}",
                            scopes=scopes, headers={"Accept": f"{OCI_MANIFEST}, "
                                                    f"{DOCKER_MANIFEST}, "
                                                    "application/vnd.oci.image.index.v1+json"})
    expect(answer, 200, dest, f"GET manifest {dest.repository}:{dest.tag}")
    return "sha256:" + hashlib.sha256(answer.body).hexdigest()


def _signature_layers(body: bytes, where: str) -> list[tuple[str, bytes | None]]:
    """(payload digest, signature or None when malformed) of each simple-signing layer."""
    try:
        doc = json.loads(body)
        layers = doc["layers"]
        if not isinstance(layers, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise SignatureProblem(f"{where}: not an image manifest") from None
    out: list[tuple[str, bytes | None]] = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_TYPE:
            continue
        digest = layer.get("digest")
        notes = layer.get("annotations")
        text = notes.get(SIGNATURE) if isinstance(notes, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            continue
        try:
            signature = base64.b64decode(text, validate=True) if isinstance(text, str) else None
        except binascii.Error:
            signature = None
        out.append((digest, signature))
    if not out:
        raise SignatureProblem(f"{where}: holds no cosign signature ({PAYLOAD_TYPE} layer)")
    return out


def _blob(client: Client, dest: Destination, digest: str, scopes: tuple[str, ...]) -> bytes:
    """A payload blob, checked against its digest (one redirect followed, to storage)."""
    answer = client.request("GET", f"/v2/{dest.repository}/blobs/{digest}", scopes=scopes)
    if answer.status in (301, 302, 303, 307, 308) and answer.header("Location"):
        answer = client.request("GET", answer.header("Location"), scopes=scopes)
    expect(answer, 200, dest, f"GET blob {digest}")
    if "sha256:" + hashlib.sha256(answer.body).hexdigest() != digest:
        raise SignatureProblem(f"{dest.registry}: blob {digest}: the registry served other "
                               "content")
    return answer.body


def _claims(data: bytes, dest: Destination, digest: str) -> str:
    """What is wrong with a verified payload's claims ("" when nothing)."""
    try:
        critical = json.loads(data)["critical"]
        kind = critical["type"]
        named = critical["image"]["docker-manifest-digest"]
        reference = critical["identity"]["docker-reference"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "is not a cosign simple-signing document"
    if kind != COSIGN_TYPE:
        return f"has type {printable(repr(kind), 80)}, not {COSIGN_TYPE!r}"
    if named != digest:
        return f"names {printable(str(named), 80)}"  # another manifest (shown beside it)
    if reference not in _names(dest):
        return f"names the repository {printable(str(reference), 200)}, not {identity(dest)}"
    return ""


def _names(dest: Destination) -> Sequence[str]:
    """The ways a payload may name the repository (cosign: the registry as written, Docker
    Hub's either way)."""
    names = [identity(dest), f"{dest.registry}/{dest.repository}"]
    if dest.registry == "docker.io":
        names.append(f"docker.io/{dest.repository}")
    return names
