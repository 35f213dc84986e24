"""What the tests share, one module per concern, so that no test module imports another:

- cli: the CLI runner (in-process, or a real process where the process is under test) and
  the one-`error:`-line check;
- archives: image archives built and read byte by byte, tiny programs and roots made of them;
- compile: C fixtures compiled by the real gcc (the `cc` fixture);
- loader: the real loader (`ld.so --list`) as an oracle;
- host: what the tests assume about this machine, and the tools they need;
- roots: Debian roots made by mmdebstrap, roots built from host libraries, qemu binfmt;
- engines: private Docker and podman for the end-to-end tests;
- registries: real registries, a token service and a proxy for the push tests.
"""
