#!/usr/bin/env python3
"""Stand-in for Anthropic's servers for claude's pre-login check (GET
https://api.anthropic.com/api/hello and https://platform.claude.com/v1/oauth/hello must answer
200): HTTPS on 127.0.0.1:443 with a certificate of a test CA (given to claude through
NODE_EXTRA_CA_CERTS), the names mapped to 127.0.0.1 by a hosts file bind-mounted in serve's
mount namespace. Logs each request to stderr.  anthropic_stand_in.py CERT KEY"""
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def _a(self):
        n = int(self.headers.get('content-length') or 0); b = self.rfile.read(n) if n else b''
        sys.stderr.write("REQ %s %s %s %s\n" % (self.headers.get('host'), self.command, self.path, b[:100])); sys.stderr.flush()
        body = b'{}'
        self.send_response(200); self.send_header('content-type','application/json'); self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)
    do_GET = do_POST = do_HEAD = _a
s = http.server.ThreadingHTTPServer(('127.0.0.1', 443), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
