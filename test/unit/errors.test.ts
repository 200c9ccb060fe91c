import t from 'tap'
import { classifyError } from '../../src/lib/errors.ts'

/** The one classification every surface's error handler starts from (src/lib/errors.ts). */

t.test('an unreachable database is 503 with Retry-After, whatever the surface', async (t) => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
  t.same(classifyError(refused), { kind: 'unavailable', status: 503, message: 'The database is unavailable; try again shortly', retryAfter: '5' })
})

t.test('anything unexpected is a 500 that says nothing about itself', async (t) => {
  for (const error of [new Error('relation "secrets" does not exist at character 12'), Object.assign(new Error('boom'), { statusCode: 503 }), 'a string', null, Object.assign(new Error('x'), { statusCode: 200 })]) {
    const failure = classifyError(error)
    t.equal(failure.kind, 'internal')
    t.equal(failure.status, 500)
    t.equal(failure.message, 'Internal Server Error', 'never the original message')
  }
})

t.test('4xx from Fastify and its plugins', async (t) => {
  const fastifyError = (code: string, statusCode: number, message = 'fastify says so'): Error => Object.assign(new Error(message), { code, statusCode })
  t.match(classifyError(fastifyError('FST_ERR_CTP_BODY_TOO_LARGE', 413)), { kind: 'body_too_large', status: 413 })
  t.match(classifyError(fastifyError('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415)), { kind: 'unsupported_media_type', status: 415 })
  t.match(classifyError(fastifyError('FST_ERR_CTP_INVALID_JSON_BODY', 400)), { kind: 'unparsable', status: 400, message: 'The request body could not be parsed' })
  t.match(classifyError(fastifyError('FST_ERR_CTP_EMPTY_JSON_BODY', 400)), { kind: 'unparsable' })
  t.match(classifyError(Object.assign(new SyntaxError('Unexpected token'), { statusCode: 400 })), { kind: 'unparsable' })
  t.match(classifyError(fastifyError('FST_ERR_RATE_LIMIT', 429, 'Rate limit exceeded, retry in 1 minute')), { kind: 'rate_limited', status: 429, message: 'Rate limit exceeded, retry in 1 minute' })
  t.match(classifyError(fastifyError('FST_ERR_VALIDATION', 400, 'body must be object')), { kind: 'rejected', status: 400, message: 'body must be object' })
  t.equal(classifyError(fastifyError('X', 404)).retryAfter, undefined)
})
