import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'

export interface BearerProxy {
  /** http://127.0.0.1:PORT: the target's paths, with the token added. */
  url: string
  close: () => Promise<void>
}

export interface BearerProxyOptions {
  /** The port to listen on (127.0.0.1); 0, the default, for any free one. */
  port?: number
  /**
   * For a deployment: send the target's host as Host, whatever the client sent (a reverse proxy
   * such as Caddy routes by Host, and an https target is reached under its own name). Without it,
   * Host passes through as the client sent it.
   */
  upstreamHost?: boolean
  /**
   * For a deployment: an Origin equal to the proxy's own origin (http://127.0.0.1:PORT) is
   * replaced by this one, the target's own origin, which the target allows. Any other Origin
   * passes through unchanged.
   */
  ownOriginAs?: string
}

/**
 * A transparent HTTP reverse proxy that adds `Authorization: Bearer <token>` to every request
 * that carries none. The conformance suite's server scenarios connect without credentials (its
 * CLI has no header option and reads no environment variable), so this is how they reach the
 * authenticated /mcp with a real token. The target may be http or https. Everything else passes
 * through untouched unless the options say otherwise, Host and Origin included (the DNS-rebinding
 * scenario depends on them), and responses stream (SSE).
 */
export async function startBearerProxy (target: string, token: string, options: BearerProxyOptions | number = {}): Promise<BearerProxy> {
  const { port = 0, upstreamHost = false, ownOriginAs } = typeof options === 'number' ? { port: options } : options
  const upstream = new URL(target)
  const send = upstream.protocol === 'https:' ? httpsRequest : httpRequest
  const defaultPort = upstream.protocol === 'https:' ? 443 : 80
  let ownOrigin = ''
  const server = createServer((req, res) => {
    const headers: IncomingHttpHeaders = { ...req.headers }
    headers.authorization ??= `Bearer ${token}`
    if (upstreamHost) headers.host = upstream.host
    if (ownOriginAs !== undefined && headers.origin === ownOrigin) headers.origin = ownOriginAs
    const forward = send({
      host: upstream.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: upstream.port === '' ? defaultPort : Number(upstream.port),
      method: req.method,
      path: req.url,
      headers
    }, (answer) => {
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
  ownOrigin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url: ownOrigin,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => { resolve() }))
    }
  }
}
