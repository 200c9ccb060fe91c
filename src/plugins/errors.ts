import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { isDatabaseUnavailable } from '../db/errors.ts'

/**
 * The default error and not-found replies: 4xx errors say what was wrong, 5xx never show
 * internals, and an unreachable database is a 503 with Retry-After. The MCP and OAuth
 * plugins replace these inside their own scope with their protocols' error shapes.
 */
export default fp(async function errorReplies (fastify: FastifyInstance) {
  fastify.setErrorHandler(async (error: FastifyError, request, reply) => {
    if (isDatabaseUnavailable(error)) {
      request.log.warn({ err: error }, 'database unavailable')
      return await reply.code(503).header('Retry-After', '5').send({ error: 'service_unavailable', message: 'The database is unavailable; try again shortly' })
    }
    const status = error.statusCode ?? 500
    if (status >= 500) {
      request.log.error({ err: error }, 'request failed')
      return await reply.code(500).send({ error: 'internal_error', message: 'Internal Server Error' })
    }
    return await reply.code(status).send({ error: error.code ?? 'bad_request', message: error.message })
  })
  fastify.setNotFoundHandler(async (request, reply) => {
    return await reply.code(404).send({ error: 'not_found', message: `${request.method} ${request.url.split('?')[0] ?? ''} is not a route of this server` })
  })
}, { name: 'error-replies', fastify: '5.x' })
