"""Layered images at a real registry (Debian's docker-registry on 127.0.0.1): the second image
pushed uploads none of the layer it shares with the first, and the summary says what was sent,
what was there and what was mounted; and signatures in cosign's format: pushed with
--sign-key (ECDSA P-256 and Ed25519, plain and encrypted keys), checked by `slimmer verify
--key` and independently by openssl over the payload blob fetched from the registry, refused
when the payload was changed, when it names another image, and with the wrong key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slimmer.registry.client import ClientOptions
from slimmer.registry.push import PushOptions, push
from tests.support.cli import error_line, run_process
from tests.support.host import need_tool
from tests.support.registries import Registry, run_registry

pytestmark = pytest.mark.e2e
SIG_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def slimmer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_process(*args, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("images")
    out = {}
    for name in ("jq", "curl"):
        out[name] = where / f"{name}.tar"
        done = slimmer("pack", f"/usr/bin/{name}", "--layers", "auto", "-o", str(out[name]))
        assert done.returncode == 0, done.stderr
    return out


def manifest_of(archive: Path) -> tuple[str, dict[str, Any]]:
    """The manifest digest and document of a one-image archive."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"]
        member = tar.extractfile("blobs/sha256/" + digest.split(":")[1])
        assert member is not None
        return digest, json.load(member)


def sizes(manifest: dict[str, Any]) -> dict[str, int]:
    blobs = [manifest["config"], *manifest["layers"]]
    return {str(b["digest"]): int(b["size"]) for b in blobs}


def uploaded_digests(registry: Registry, repository: str) -> list[str]:
    """The digests of the uploads the registry committed for `repository`, from its log."""
    out = []
    for line in registry.log().splitlines():
        if f'"PUT /v2/{repository}/blobs/uploads/' in line and '" 201 ' in line:
            out.append(line.split("digest=", 1)[1].split(" ", 1)[0].split("&")[0]
                       .replace("%3A", ":"))
    return out


# ---- layers shared at the registry -------------------------------------------------------


def test_second_image_uploads_only_what_is_new(registry: Registry,
                                               images: dict[str, Path]) -> None:
    options = PushOptions(ClientOptions(insecure=True))
    _, jq = manifest_of(images["jq"])
    _, curl = manifest_of(images["curl"])
    base = str(jq["layers"][0]["digest"])
    assert base == curl["layers"][0]["digest"]
    first = push(str(images["jq"]), [f"{registry.address}/tools/jq:1"], options)[0]
    assert (first.uploaded, first.existing, first.mounted) == (len(sizes(jq)), 0, 0)
    assert first.bytes_uploaded == sum(sizes(jq).values())

    done = slimmer("push", str(images["curl"]), f"{registry.address}/tools/jq:curl",
                   "--insecure")
    assert done.returncode == 0, done.stderr
    new = {d: s for d, s in sizes(curl).items() if d != base}
    base_size = sizes(curl)[base]
    assert f"{len(new) + 1} blobs ({len(new)} uploaded, 1 already there, 0 mounted), " \
        in done.stdout
    assert f"{sum(new.values()) / 1e6:.1f} MB sent, {base_size / 1e6:.1f} MB already there, " \
           "0.0 MB mounted" in done.stdout
    # the registry saw the base uploaded once (with jq), then only curl's own blobs
    committed = uploaded_digests(registry, "tools/jq")
    assert committed.count(base) == 1
    assert sorted(committed[len(sizes(jq)):]) == sorted(new)

    # another repository of the registry, told where the blobs are: everything mounted
    again = push(str(images["curl"]), [f"{registry.address}/other/curl:1"],
                 PushOptions(ClientOptions(insecure=True), mount_from=("tools/jq",)))[0]
    assert (again.uploaded, again.existing, again.mounted) == (0, 0, len(sizes(curl)))
    assert (again.bytes_uploaded, again.bytes_mounted) == (0, sum(sizes(curl).values()))
    assert uploaded_digests(registry, "other/curl") == []


# ---- signatures --------------------------------------------------------------------------


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([need_tool("openssl"), *args], input=input, capture_output=True)


def make_key(directory: Path, kind: str, password: str = "") -> tuple[Path, Path]:
    """A private key (PEM; encrypted with `password`) and its public key."""
    directory.mkdir(parents=True, exist_ok=True)
    key, pub = directory / f"{kind}.key", directory / f"{kind}.pub"
    algorithm = (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa"
                 else ["-algorithm", "ed25519"])
    crypt = ["-aes-256-cbc", "-pass", f"pass:{password}"] if password else []
    done = openssl("genpkey", *algorithm, *crypt, "-out", str(key))
    assert done.returncode == 0, done.stderr
    done = openssl("pkey", "-in", str(key), *(["-passin", f"pass:{password}"] if password
                                              else []), "-pubout", "-out", str(pub))
    assert done.returncode == 0, done.stderr
    return key, pub


def get(registry: Registry, path: str, accept: str = "") -> bytes:
    request = urllib.request.Request(f"http://{registry.address}{path}",
                                     headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as answer:
        data: bytes = answer.read()
        return data


def put_blob(registry: Registry, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(f"http://{registry.address}/v2/{repository}/blobs/uploads/",
                                   method="POST")
    with urllib.request.urlopen(start, timeout=30) as answer:
        location = answer.headers["Location"]
    url = urllib.parse.urljoin(f"http://{registry.address}/", location)
    put = urllib.request.Request(f"{url}{'&' if '?' in url else '?'}digest={digest}",
                                 data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put, timeout=30) as answer:
        assert answer.status == 201
    return digest


def put_manifest(registry: Registry, repository: str, tag: str, data: bytes) -> None:
    put = urllib.request.Request(f"http://{registry.address}/v2/{repository}/manifests/{tag}",
                                 data=data, method="PUT", headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(put, timeout=30) as answer:
        assert answer.status == 201


def signature_of(registry: Registry, repository: str,
                 digest: str) -> tuple[dict[str, Any], bytes, bytes]:
    """The .sig manifest, the payload blob and the signature, fetched from the registry."""
    tag = digest.replace(":", "-") + ".sig"
    manifest = json.loads(get(registry, f"/v2/{repository}/manifests/{tag}", OCI_MANIFEST))
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == SIG_TYPE
    payload = get(registry, f"/v2/{repository}/blobs/{layer['digest']}")
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    return manifest, payload, signature


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_signed_push_verified_by_slimmer_and_openssl(registry: Registry, images: dict[str, Path],
                                                     tmp_path: Path, kind: str) -> None:
    key, pub = make_key(tmp_path / "keys", kind)
    repository = f"signed/{kind}"
    reference = f"{registry.address}/{repository}:1"
    done = slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key", str(key))
    assert done.returncode == 0, done.stderr
    digest, _ = manifest_of(images["jq"])
    pinned = f"{registry.address}/{repository}@{digest}"
    sig_ref = f"{registry.address}/{repository}:{digest.replace(':', '-')}.sig"
    assert f"signed {pinned}: {sig_ref}" in done.stdout

    manifest, payload, signature = signature_of(registry, repository, digest)
    assert json.loads(payload) == {
        "critical": {"identity": {"docker-reference": f"{registry.address}/{repository}"},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": None}
    config = json.loads(get(registry, f"/v2/{repository}/blobs/"
                                      f"{manifest['config']['digest']}"))
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(signature)
    if kind == "ecdsa":
        check = openssl("dgst", "-sha256", "-verify", str(pub), "-signature",
                        str(tmp_path / "sig"), str(tmp_path / "payload"))
        assert check.returncode == 0 and b"Verified OK" in check.stdout, check.stderr
    else:
        check = openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin", "-in",
                        str(tmp_path / "payload"), "-sigfile", str(tmp_path / "sig"))
        assert check.returncode == 0 and b"Signature Verified Successfully" in check.stdout, \
            check.stderr

    ok = slimmer("verify", pinned, "--key", str(pub), "--insecure")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: {pinned}: signed with {pub}")
    by_tag = slimmer("verify", reference, "--key", str(pub), "--insecure")
    assert by_tag.returncode == 0 and by_tag.stdout == ok.stdout

    _, other = make_key(tmp_path / "other", kind)
    wrong = slimmer("verify", pinned, "--key", str(other), "--insecure")
    error_line(wrong, pinned, "no signature", "verifies with", str(other))


def test_signatures_of_several_keys_are_kept(registry: Registry, images: dict[str, Path],
                                             tmp_path: Path) -> None:
    ecdsa_key, ecdsa_pub = make_key(tmp_path / "a", "ecdsa")
    ed_key, ed_pub = make_key(tmp_path / "b", "ed25519")
    reference = f"{registry.address}/signed/twice:1"
    digest, _ = manifest_of(images["jq"])
    counts = []
    for key in (ecdsa_key, ed_key, ecdsa_key):
        done = slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key",
                       str(key))
        assert done.returncode == 0, done.stderr
        tag = digest.replace(":", "-") + ".sig"
        manifest = json.loads(get(registry, f"/v2/signed/twice/manifests/{tag}", OCI_MANIFEST))
        counts.append(len(manifest["layers"]))
        config = json.loads(get(registry, f"/v2/signed/twice/blobs/"
                                          f"{manifest['config']['digest']}"))
        assert config["rootfs"]["diff_ids"] == [la["digest"] for la in manifest["layers"]]
    assert counts == [1, 2, 2]  # the second key's added; the first key's again: nothing new
    for pub in (ecdsa_pub, ed_pub):
        done = slimmer("verify", reference, "--key", str(pub), "--insecure")
        assert done.returncode == 0, done.stderr


def test_tampered_payload_and_replayed_signature_fail(registry: Registry,
                                                      images: dict[str, Path],
                                                      tmp_path: Path) -> None:
    key, pub = make_key(tmp_path / "keys", "ecdsa")
    repository = "signed/tampered"
    for name in ("jq", "curl"):
        done = slimmer("push", str(images[name]), f"{registry.address}/{repository}:{name}",
                       "--insecure", "--sign-key", str(key))
        assert done.returncode == 0, done.stderr
    jq, _ = manifest_of(images["jq"])
    curl, _ = manifest_of(images["curl"])

    # the payload changed (another repository named), the .sig pushed again with it
    manifest, payload, _ = signature_of(registry, repository, jq)
    changed = payload.replace(b"signed/tampered", b"signed/tamperee")
    assert changed != payload
    layer = manifest["layers"][0]
    layer.update(digest=put_blob(registry, repository, changed), size=len(changed))
    put_manifest(registry, repository, jq.replace(":", "-") + ".sig",
                 json.dumps(manifest).encode())
    pinned = f"{registry.address}/{repository}@{jq}"
    done = slimmer("verify", pinned, "--key", str(pub), "--insecure")
    error_line(done, pinned, "no signature", "verifies")

    # a good signature of jq put where curl's belongs: it verifies, but names another image
    good = slimmer("push", str(images["jq"]), f"{registry.address}/{repository}:jq",
                   "--insecure", "--sign-key", str(key))  # jq signed again
    assert good.returncode == 0, good.stderr
    jq_sig = get(registry, f"/v2/{repository}/manifests/{jq.replace(':', '-')}.sig",
                 OCI_MANIFEST)
    put_manifest(registry, repository, curl.replace(":", "-") + ".sig", jq_sig)
    replayed = f"{registry.address}/{repository}@{curl}"
    done = slimmer("verify", replayed, "--key", str(pub), "--insecure")
    error_line(done, replayed, f"but its payload names {jq}")

    unsigned = slimmer("verify", f"{registry.address}/{repository}@sha256:{'0' * 64}", "--key",
                       str(pub), "--insecure")
    error_line(unsigned, "not signed", ".sig not found")


def test_encrypted_key_and_bad_keys(registry: Registry, images: dict[str, Path],
                                    tmp_path: Path) -> None:
    key, pub = make_key(tmp_path / "keys", "ecdsa", password="open sesame")
    reference = f"{registry.address}/signed/encrypted:1"
    env = {"SLIMMER_TEST_KEY_PASSWORD": "open sesame"}
    done = slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key", str(key),
                   "--sign-password-env", "SLIMMER_TEST_KEY_PASSWORD", env=env)
    assert done.returncode == 0, done.stderr
    ok = slimmer("verify", reference, "--key", str(pub), "--insecure")
    assert ok.returncode == 0, ok.stderr

    no_password = slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key",
                          str(key))
    error_line(no_password, str(key), "encrypted", "--sign-password-env")
    wrong = slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key", str(key),
                    "--sign-password-env", "SLIMMER_TEST_KEY_PASSWORD",
                    env={"SLIMMER_TEST_KEY_PASSWORD": "wrong"})
    error_line(wrong, str(key), "cannot be decrypted")
    rsa = tmp_path / "rsa.key"
    assert openssl("genpkey", "-algorithm", "RSA", "-out", str(rsa)).returncode == 0
    error_line(slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key",
                       str(rsa)), str(rsa), "an RSA key", "ECDSA P-256 or Ed25519")
    error_line(slimmer("push", str(images["jq"]), reference, "--insecure", "--sign-key",
                       str(pub)), str(pub), "not a PEM private key")
    error_line(slimmer("verify", reference, "--key", str(key), "--insecure"), str(key),
               "not a PEM public key")
    error_line(slimmer("verify", str(images["jq"]), "--key", str(pub)), "REGISTRY/REPO@DIGEST",
               "not a file")
    error_line(slimmer("verify", str(images["jq"]), "--insecure"), "--insecure", "--key")
    # a key that cannot be used is refused before anything is built
    out = tmp_path / "never.tar"
    error_line(slimmer("pack", "/usr/bin/jq", "-o", str(out), "--push", reference,
                       "--insecure", "--sign-key", str(rsa)), "an RSA key")
    assert not out.exists()


def test_sbom_attached_as_cosign_does(registry: Registry, tmp_path: Path) -> None:
    sbom, out = tmp_path / "jq.spdx.json", tmp_path / "jq.tar"
    reference = f"{registry.address}/attached/jq:1"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out), "--layers", "auto", "--sbom",
                   str(sbom), "--push", reference, "--insecure", "--attach-sbom", str(sbom))
    assert done.returncode == 0, done.stderr
    digest, _ = manifest_of(out)
    tag = digest.replace(":", "-") + ".sbom"
    assert f"attached the SBOM to {registry.address}/attached/jq@{digest}: " \
           f"{registry.address}/attached/jq:{tag}" in done.stdout
    manifest = json.loads(get(registry, f"/v2/attached/jq/manifests/{tag}", OCI_MANIFEST))
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "text/spdx+json"
    assert get(registry, f"/v2/attached/jq/blobs/{layer['digest']}") == sbom.read_bytes()

    not_spdx = tmp_path / "not.json"
    not_spdx.write_text('{"a": 1}')
    error_line(slimmer("push", str(out), reference, "--insecure", "--attach-sbom",
                       str(not_spdx)), str(not_spdx), "not an SPDX JSON document")
