import mmap

Facts = tuple[int, bool, int, int, int, int, int, str | None, bool, tuple[str, ...], str | None,
              str | None, str | None, int]
Data = bytes | mmap.mmap

def scan(path: str, /) -> Facts | None: ...
def strings(buffer: Data, start: int, end: int,
            /) -> tuple[list[bytes], list[bytes], list[bytes]]: ...
def undefined(table: Data, strings: Data, count: int, entsize: int, wide: bool, little: bool,
              /) -> list[bytes] | None: ...
