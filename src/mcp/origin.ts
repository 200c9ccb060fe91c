import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify'
import { sendRpcError } from './protocol.ts'

const CORS_ALLOW_HEADERS = 'Authorization, Content-Type, Accept, Mcp-Protocol-Version, Mcp-Session-Id, Mcp-Method, Mcp-Name, Last-Event-ID'
const CORS_EXPOSE_HEADERS = 'WWW-Authenticate, Mcp-Session-Id, Mcp-Protocol-Version'

/**
 * DNS-rebinding protection (MCP transport spec): a present but unlisted Origin is refused
 * before anything else happens; an absent Origin (non-browser clients) is fine. Origins match
 * exactly, scheme and port included (decision 0022 says why not the SDK's hostname check).
 */
export function createOriginHook (allowedOrigins: readonly string[]): onRequestAsyncHookHandler {
  const allowed = new Set(allowedOrigins)
  return async function checkOrigin (request, reply) {
    const origin = request.headers.origin
    if (origin === undefined) return
    if (!allowed.has(origin)) {
      return await sendRpcError(reply, { status: 403, code: -32000, message: `Origin ${JSON.stringify(origin).slice(0, 200)} is not allowed; add it to ALLOWED_ORIGINS` })
    }
    reply.header('Access-Control-Allow-Origin', origin)
    reply.header('Access-Control-Expose-Headers', CORS_EXPOSE_HEADERS)
    reply.header('Vary', 'Origin')
  }
}

/** CORS preflight: no authentication, the methods and headers MCP clients send. */
export async function corsPreflight (_request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  reply.header('Access-Control-Allow-Methods', 'GET, POST, DELETE, OPTIONS')
  reply.header('Access-Control-Allow-Headers', CORS_ALLOW_HEADERS)
  reply.header('Access-Control-Max-Age', '86400')
  return await reply.code(204).send()
}
