import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { classifyAndLog } from '../lib/errors.ts'

/**
 * The default error and not-found replies: 4xx errors say what was wrong, 5xx never show
 * internals, and an unreachable database is a 503 with Retry-After. The MCP and OAuth
 * plugins replace these inside their own scope with their protocols' error shapes.
 */
export default fp(async function errorReplies (fastify: FastifyInstance) {
  fastify.setErrorHandler(async (error: FastifyError, request, reply) => {
    const failure = classifyAndLog(request.log, error, 'request failed')
    if (failure.retryAfter !== undefined) reply.header('Retry-After', failure.retryAfter)
    const code = failure.kind === 'unavailable' ? 'service_unavailable' : failure.kind === 'internal' ? 'internal_error' : error.code ?? 'bad_request'
    return await reply.code(failure.status).send({ error: code, message: failure.message })
  })
  fastify.setNotFoundHandler(async (request, reply) => {
    return await reply.code(404).send({ error: 'not_found', message: `${request.method} ${request.url.split('?')[0] ?? ''} is not a route of this server` })
  })
}, { name: 'error-replies', fastify: '5.x' })
