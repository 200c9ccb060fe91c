import type { Server } from 'node:http'
import type { Socket } from 'node:net'

/**
 * Lets a closing server finish its in-flight requests without waiting on connections that carry
 * none. Node's `server.close()` closes idle keep-alive connections, but not connections that have
 * not sent a request yet (browsers and HTTP clients open them ahead of time): those would hold a
 * graceful shutdown open until `headersTimeout`. `drain()` (call it as the server closes)
 * destroys every connection without a request in flight now, and each other one as soon as its
 * last response is done.
 */
export function trackConnections (server: Server): { drain: () => void } {
  const inFlight = new Map<Socket, number>()
  let draining = false

  server.on('connection', (socket: Socket) => {
    inFlight.set(socket, 0)
    socket.once('close', () => { inFlight.delete(socket) })
  })
  server.on('request', (request, response) => {
    const socket = request.socket
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1)
    response.once('close', () => {
      const left = (inFlight.get(socket) ?? 1) - 1
      inFlight.set(socket, left)
      if (draining && left === 0) socket.destroy()
    })
  })

  return {
    drain () {
      draining = true
      for (const [socket, count] of inFlight) if (count === 0) socket.destroy()
    }
  }
}
