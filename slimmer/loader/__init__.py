"""The loader core: ELF facts, ld.so.cache, search paths and tokens, the resolver, and
the read-only views of a root it resolves in."""
