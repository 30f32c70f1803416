"""TLS for rtmps: the server's certificate and host name are verified by default, both by the Python
probe and by FFmpeg's own connection.

PyAV 18 opens an output with `avio_open(url)`, which passes no protocol options, and FFmpeg's TLS
does not verify unless `tls_verify=1` is given.  `open_output_io` therefore opens the output's I/O
context itself with `avio_open2(url, options)` (ctypes, from the libavformat PyAV loaded) and hands it
to the container before `start_encoding()`, which then uses it instead of opening its own.  The
container's `AVFormatContext` is located in the PyAV object and checked by its `AVClass` pointer;
if that check fails (another PyAV layout), rtmps with verification refuses to connect instead of
connecting unverified.  The options reach FFmpeg's `tls` protocol through the `rtmp` protocol
(`tls_verify`, `ca_file`; the host name is checked against the URL's host).  The CA store is the
system's, the one Python's `ssl` uses, unless `ca_file` names a private CA.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import ssl
from typing import Any

import av
from mediaengine.sdk.errors import TlsError

#: how far into a PyAV container object to look for its AVFormatContext pointer (bytes)
_SCAN_BYTES = 128
_AVIO_FLAG_WRITE = 2


def system_ca_file() -> str | None:
    """The system CA bundle Python's `ssl` uses (a PEM file), or None if there is none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def client_context(verify: bool, ca_file: str) -> ssl.SSLContext:
    """The probe's TLS context: system CAs (or `ca_file`), certificate and host name checked."""
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file or None)


def ffmpeg_options(verify: bool, ca_file: str) -> dict[str, str]:
    """Protocol options for FFmpeg's rtmps connection."""
    if not verify:
        return {"tls_verify": "0"}
    ca = ca_file or system_ca_file()
    if not ca:
        raise TlsError("rtmps: no system CA bundle found to verify the server with; give ca_file "
                       "(a PEM file) or install the system CA certificates")
    return {"tls_verify": "1", "ca_file": ca}


@functools.cache
def _libavformat() -> ctypes.CDLL:
    """The libavformat PyAV itself uses (its wheel's copy, or the system's for a source build)."""
    here = os.path.dirname(av.__file__)
    bundled = sorted(glob.glob(os.path.join(here, os.pardir, "av.libs", "libavformat-*.so*")))
    lib = ctypes.CDLL(bundled[0] if bundled else "libavformat.so")
    lib.avformat_get_class.restype = ctypes.c_void_p
    lib.avio_open2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                               ctypes.c_void_p]
    lib.avio_closep.argtypes = [ctypes.c_void_p]
    lib.av_dict_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.av_dict_free.argtypes = [ctypes.c_void_p]
    lib.av_strerror.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def _format_context(container: Any) -> int:
    """Address of the container's AVFormatContext, found by its AVClass; TlsError if not found."""
    lib = _libavformat()
    avclass = lib.avformat_get_class()
    base = id(container)
    for offset in range(16, _SCAN_BYTES, ctypes.sizeof(ctypes.c_void_p)):
        ptr = ctypes.c_void_p.from_address(base + offset).value
        if ptr and ctypes.c_void_p.from_address(ptr).value == avclass:
            return ptr
    raise TlsError(f"rtmps: cannot hand TLS options to FFmpeg with PyAV {av.__version__} (its output "
                   "container layout is not the one expected); refusing to connect unverified")


def _pb_address(ctx: int) -> int:
    """Address of AVFormatContext.pb (after av_class, iformat, oformat and priv_data)."""
    return ctx + 4 * ctypes.sizeof(ctypes.c_void_p)


def open_output_io(container: Any, url: str, options: dict[str, str]) -> None:
    """Open `container`'s I/O (the RTMP connection) with FFmpeg protocol `options`.  Blocks without
    holding the GIL.  Raises OSError (with FFmpeg's reason, never the URL) if it fails."""
    lib = _libavformat()
    pb = _pb_address(_format_context(container))
    if ctypes.c_void_p.from_address(pb).value:
        raise RuntimeError("the container's I/O is already open")
    opts = ctypes.c_void_p()
    try:
        for key, value in options.items():
            lib.av_dict_set(ctypes.byref(opts), key.encode(), value.encode(), 0)
        rc = lib.avio_open2(ctypes.c_void_p(pb), url.encode(), _AVIO_FLAG_WRITE, None, ctypes.byref(opts))
    finally:
        lib.av_dict_free(ctypes.byref(opts))
    if rc < 0:
        buf = ctypes.create_string_buffer(256)
        lib.av_strerror(rc, buf, len(buf))
        raise OSError(-rc, buf.value.decode(errors="replace") or "error")


def close_output_io(container: Any) -> None:
    """Close an I/O opened by `open_output_io` when the container never started (PyAV closes it
    only after a written header)."""
    lib = _libavformat()
    lib.avio_closep(ctypes.c_void_p(_pb_address(_format_context(container))))
