"""serve: the assembled site over http://127.0.0.1 (a secure context, so WebGPU and the Cache API work).

    python deploy/serve.py [--dir build/site] [--port 8888]        # PORT in the environment also sets it
    python deploy/serve.py --dir build/params-upload --files --cors # a parameter host (make deploy-ghpages)

`make serve` runs it after `make site`. Binds to 127.0.0.1 only, with the MIME types a browser insists on
(application/wasm for WebAssembly.instantiateStreaming, text/javascript for module scripts and workers).
Port 0 picks a free port; the first line printed is always `serving http://127.0.0.1:<port>/ from <dir>`,
which tests read. Responses say `Cache-Control: no-cache`, so an edited page is seen on reload (the page
keeps model files in the Cache API itself). --files serves a folder without a page (a parameter host's files);
--cors adds `Access-Control-Allow-Origin: *`, which a parameter host on another origin must send.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    "": "application/octet-stream",
}


class Handler(SimpleHTTPRequestHandler):
    extensions_map = MIME
    protocol_version = "HTTP/1.1"  # keep-alive: a model is dozens of files
    quiet = False
    cors = False

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent.parent / "build" / "site")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8888))
    parser.add_argument("--quiet", action="store_true", help="no request log")
    parser.add_argument("--files", action="store_true", help="a folder of files without a page (a parameter host)")
    parser.add_argument("--cors", action="store_true", help="send Access-Control-Allow-Origin: * (a parameter host)")
    args = parser.parse_args()
    if args.files and not args.dir.is_dir():
        sys.exit(f"error: serve: {args.dir} is not a folder")
    if not args.files and not (args.dir / "index.html").is_file():
        sys.exit(f"error: serve: {args.dir}/index.html is missing; run `make site` first")
    Handler.quiet, Handler.cors = args.quiet, args.cors
    handler = functools.partial(Handler, directory=str(args.dir))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as err:
        sys.exit(f"error: serve: cannot listen on 127.0.0.1:{args.port} ({err.strerror}); pick another with PORT=...")
    print(f"serving http://127.0.0.1:{server.server_address[1]}/ from {args.dir}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
