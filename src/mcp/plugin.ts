import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AuthContext } from '../auth/types.ts'
import { classifyAndLog, type ErrorKind } from '../lib/errors.ts'
import type { Runtime } from '../runtime.ts'
import { createAuthHook } from './auth-hook.ts'
import { corsPreflight, createOriginHook } from './origin.ts'
import {
  checkBatch, checkMediaTypes, classify, directToolCall, fastToolCall, invalidToolCallParams, MCP_BODY_LIMIT, RETRY_AFTER_SECONDS,
  sendRpcError, sendWebResponse, toolCallResponse, toWebRequest, type DirectToolCall
} from './protocol.ts'
import { createScopeCheck } from './scope-check.ts'
import { rpcCodeOf, UNAVAILABLE_ERROR_CODE } from './tool-call.ts'

/**
 * `/mcp`: MCP Streamable HTTP, stateless, both protocol eras (2026-07-28 and the 2025
 * revisions). A request meets, in order: the Origin check, bearer authentication, the scope
 * check of the tools it calls, then either the direct tools/call path or the SDK.
 */
export default async function mcpRoutes (fastify: FastifyInstance, { runtime }: { runtime: Pick<Runtime, 'config' | 'authenticator' | 'external' | 'audit' | 'mcp' | 'callTool' | 'listen' | 'pending'> }): Promise<void> {
  const { config, authenticator, external, audit, mcp, callTool, listen, pending } = runtime
  const resourceMetadataUrl = `${config.publicUrl}/.well-known/oauth-protected-resource/mcp`
  const endpointUrl = `${config.publicUrl}/mcp`

  fastify.decorateRequest('auth', null)
  fastify.addHook('onRequest', createOriginHook(config.allowedOrigins))
  fastify.addHook('onRequest', createAuthHook({ authenticator, external, resourceMetadataUrl, rateLimitMultiplier: config.rateLimitMultiplier }))

  fastify.options('/mcp', corsPreflight)

  fastify.post('/mcp', {
    bodyLimit: MCP_BODY_LIMIT,
    preHandler: createScopeCheck({ audit, resourceMetadataUrl })
  }, async (request, reply) => {
    const problem = checkMediaTypes(request) ?? checkBatch(request.body)
    if (problem !== undefined) return await sendRpcError(reply, problem)
    const auth = request.auth as AuthContext
    const fast = fastToolCall(request)
    if (fast !== undefined) return await callToolDirectly(reply, fast, auth)
    const route = classify(request)
    if (route.kind === 'reject') {
      return await sendRpcError(reply, { status: route.httpStatus, code: route.code, message: route.message, data: route.data, id: requestIdOf(request.body) })
    }
    if (route.kind === 'modern' && isListenRequest(request.body)) {
      // The classifier catches a header naming another method; the SDK's own listen path also
      // requires the header to be there (a stream opened by mistake would never end).
      if (request.headers['mcp-method'] !== 'subscriptions/listen') {
        return await sendRpcError(reply, { status: 400, code: -32020, id: requestIdOf(request.body), message: 'Bad Request: the request headers and body disagree: the body names method subscriptions/listen but the Mcp-Method header is missing' })
      }
      return await listen.open(request.body, auth, reply)
    }
    // The SDK acknowledges the notification; the long-poll it names may be running anywhere.
    const cancelled = cancelledRequestId(request.body)
    if (cancelled !== undefined) await pending.cancel(auth, cancelled)
    const invalid = invalidToolCallParams(request, route)
    if (invalid !== undefined) return await sendRpcError(reply, invalid)
    const call = directToolCall(request, route)
    if (call !== undefined) return await callToolDirectly(reply, call, auth)

    const disconnected = abortOnClose(reply)
    const webRequest = toWebRequest(request, endpointUrl, disconnected.signal)
    const response = route.kind === 'modern'
      ? await mcp.serveModern(webRequest, request.body, auth)
      : await mcp.serveLegacy(webRequest, request.body, auth)
    if (clientGone(reply)) return await reply.code(499).send()
    return await sendWebResponse(reply, response)
  })

  /**
   * The hot path (decision 0021): one tools/call, run by the same handler the SDK servers
   * register, without building a server per request.
   */
  async function callToolDirectly (reply: FastifyReply, call: DirectToolCall, auth: AuthContext): Promise<FastifyReply> {
    // A long-poll ends early when its client goes away or cancels it (2025: notifications/cancelled).
    const waiting = call.waits ? abortOnClose(reply) : undefined
    const forget = waiting === undefined ? undefined : pending.track(auth, call.id, waiting)
    let response: unknown
    try {
      response = toolCallResponse(call, await callTool(call.params, auth, waiting?.signal))
    } catch (err) {
      const code = rpcCodeOf(err)
      response = { jsonrpc: '2.0', id: call.id, error: { code, message: code === -32603 ? 'Internal error' : (err as Error).message } }
      if (code === UNAVAILABLE_ERROR_CODE) return await reply.code(503).header('Retry-After', RETRY_AFTER_SECONDS).send(response)
    } finally {
      forget?.()
    }
    // Nobody to answer; a cancelled call still answers (with what it had), as HTTP needs a response.
    if (clientGone(reply)) return await reply.code(499).send()
    return await reply.code(200).header('Cache-Control', 'no-store').send(response)
  }

  // Stateless in both eras: no session stream to open with GET or to end with DELETE.
  const notAllowed = async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    reply.header('Allow', 'POST, OPTIONS')
    await sendRpcError(reply, { status: 405, code: -32000, message: 'Method not allowed: this server is stateless; send JSON-RPC requests with POST' })
  }
  fastify.get('/mcp', notAllowed)
  fastify.delete('/mcp', notAllowed)

  fastify.setErrorHandler(async (error: FastifyError, request, reply) => {
    const failure = classifyAndLog(request.log, error, 'mcp request failed')
    if (failure.retryAfter !== undefined) reply.header('Retry-After', failure.retryAfter)
    return await sendRpcError(reply, { status: failure.status, ...RPC_ERRORS[failure.kind](failure.message) })
  })
}

/** Each kind of failure as JSON-RPC says it (the HTTP status comes with the classification). */
const RPC_ERRORS: Record<ErrorKind, (message: string) => { code: number, message: string }> = {
  unavailable: () => ({ code: -32000, message: 'The bus database is unavailable; try again shortly' }),
  internal: () => ({ code: -32603, message: 'Internal error' }),
  unparsable: () => ({ code: -32700, message: 'Parse error: the body is not valid JSON' }),
  body_too_large: () => ({ code: -32000, message: `Payload Too Large: the request body must not exceed ${MCP_BODY_LIMIT} bytes` }),
  unsupported_media_type: () => ({ code: -32000, message: 'Unsupported Media Type: Content-Type must be application/json' }),
  rate_limited: (message) => ({ code: -32000, message }),
  rejected: (message) => ({ code: -32000, message })
}

/** Aborts when the client goes away before the answer was written. */
function abortOnClose (reply: FastifyReply): AbortController {
  const controller = new AbortController()
  reply.raw.on('close', () => { if (!reply.raw.writableFinished) controller.abort() })
  return controller
}

function clientGone (reply: FastifyReply): boolean {
  return reply.raw.destroyed && !reply.raw.writableFinished
}

/** The id a `notifications/cancelled` names, if this is one. */
function cancelledRequestId (body: unknown): unknown {
  const message = body as { method?: unknown, id?: unknown, params?: { requestId?: unknown } } | null
  if (message?.method !== 'notifications/cancelled' || message.id !== undefined) return undefined
  return message.params?.requestId
}

function isListenRequest (body: unknown): boolean {
  return (body as { method?: unknown } | null)?.method === 'subscriptions/listen' && (body as { id?: unknown }).id !== undefined
}

function requestIdOf (body: unknown): string | number | null {
  const id = (body as { id?: unknown } | null)?.id
  return typeof id === 'string' || typeof id === 'number' ? id : null
}
