import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { trackConnections } from './connections.ts'

/**
 * Listens like `fastify.listen`, except that "localhost" always means both 127.0.0.1 and ::1:
 * Fastify binds whatever the resolver says localhost is (often only 127.0.0.1), but clients
 * may try ::1 first, and `http://localhost:8088/mcp` must work either way. A missing IPv6
 * stack is not an error. Returns the port bound (useful with port 0).
 */
export async function listenOn (app: FastifyInstance, host: string, port: number): Promise<number> {
  if (host !== 'localhost') {
    await app.listen({ host, port })
    return (app.server.address() as AddressInfo).port
  }
  let secondary: Server | undefined
  // Assigned once the second listener exists; the close hook registered before it reads it.
  // eslint-disable-next-line prefer-const
  let connections: { drain: () => void } | undefined
  // Closing waits for the second listener's in-flight requests too (graceful shutdown).
  app.addHook('onClose', async () => {
    const server = secondary
    if (server === undefined) return
    const closed = new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    connections?.drain()
    await closed
  })
  await app.listen({ host: '127.0.0.1', port })
  const bound = (app.server.address() as AddressInfo).port
  const server = createServer(app.routing)
  connections = trackConnections(server)
  server.keepAliveTimeout = app.server.keepAliveTimeout
  server.requestTimeout = app.server.requestTimeout
  server.headersTimeout = app.server.headersTimeout
  const ok = await new Promise<boolean>((resolve) => {
    server.once('error', () => { resolve(false) })
    server.listen({ host: '::1', port: bound, ipv6Only: true }, () => { resolve(true) })
  })
  if (ok) {
    secondary = server
    app.log.info(`Server listening at http://[::1]:${bound}`)
  }
  return bound
}
