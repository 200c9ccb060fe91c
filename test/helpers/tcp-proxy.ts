import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy between the server and PostgreSQL that a test can cut (every connection dropped,
 * new ones refused, as when the database host goes away) and restore on the same port.
 */
export class CuttableProxy {
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  port = 0

  private readonly target: { host: string, port: number }

  constructor (target: { host: string, port: number }) {
    this.target = target
  }

  /** A proxy in front of the PostgreSQL server of `databaseUrl`, listening; and the URL through it. */
  static async inFrontOf (databaseUrl: string): Promise<{ proxy: CuttableProxy, url: string }> {
    const real = new URL(databaseUrl)
    const proxy = new CuttableProxy({ host: real.hostname, port: Number(real.port === '' ? 5432 : real.port) })
    await proxy.start()
    const proxied = new URL(databaseUrl)
    proxied.hostname = '127.0.0.1'
    proxied.port = String(proxy.port)
    return { proxy, url: proxied.toString() }
  }

  async start (): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host)
      for (const socket of [client, upstream]) {
        this.sockets.add(socket)
        socket.on('close', () => { this.sockets.delete(socket) })
        socket.on('error', () => {})
      }
      client.pipe(upstream)
      upstream.pipe(client)
      client.on('close', () => upstream.destroy())
      upstream.on('close', () => client.destroy())
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => { resolve() })
    })
    this.port = (server.address() as { port: number }).port
    this.server = server
  }

  async cut (): Promise<void> {
    const server = this.server
    this.server = undefined
    const closed = new Promise<void>((resolve) => { server?.close(() => { resolve() }) ?? resolve() })
    for (const socket of this.sockets) socket.destroy()
    await closed
  }

  async restore (): Promise<void> { await this.start() }
}
