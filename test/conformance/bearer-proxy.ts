import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface BearerProxy {
  /** http://127.0.0.1:PORT: the target's paths, with the token added. */
  url: string
  close: () => Promise<void>
}

/**
 * A transparent HTTP reverse proxy that adds `Authorization: Bearer <token>` to every request
 * that carries none. The conformance suite's server scenarios connect without credentials (its
 * CLI has no header option and reads no environment variable), so this is how they reach the
 * authenticated /mcp with a real token. Everything else passes through untouched, Host and Origin
 * included (the DNS-rebinding scenario depends on them), and responses stream (SSE).
 */
export async function startBearerProxy (target: string, token: string, port = 0): Promise<BearerProxy> {
  const upstream = new URL(target)
  const server = createServer((req, res) => {
    const headers: IncomingHttpHeaders = { ...req.headers }
    headers.authorization ??= `Bearer ${token}`
    const forward = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.rawHeaders)
      res.flushHeaders()
      answer.pipe(res)
    })
    forward.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
      res.end(`bearer proxy: ${err.message}`)
    })
    // A client that goes away (an SSE stream the suite stops reading) ends the upstream request too.
    res.on('close', () => { if (!res.writableFinished) forward.destroy() })
    req.pipe(forward)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => { resolve() }))
    }
  }
}
