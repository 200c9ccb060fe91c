import fc from 'fast-check'
import type { FastifyRequest } from 'fastify'
import { test } from 'tap'
import { classify, directToolCall, fastToolCall } from '../../src/mcp/protocol.ts'
import { replayHint, seedFor } from '../helpers/fuzz-seed.ts'

/**
 * The hot path skips the SDK's classifier for plain tools/calls (src/mcp/protocol.ts). Whatever
 * it takes, the classifier must route the same way and the post-classifier guard must yield the
 * same call: the fast path may only be a shortcut, never a different answer.
 */

const MODERN = '2026-07-28'
const VALID_ENVELOPES = [
  { 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': {} },
  { 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'c', version: '1' } }
]

function asRequest (headers: Record<string, string>, body: unknown): FastifyRequest {
  return { method: 'POST', headers, body } as unknown as FastifyRequest
}

const envelope = fc.oneof(
  fc.constant(undefined),
  fc.constant({}),
  fc.constant({ progressToken: 5 }),
  fc.constantFrom(...VALID_ENVELOPES),
  fc.constant({ 'io.modelcontextprotocol/protocolVersion': MODERN }),
  fc.constant({ 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': 'all' }),
  fc.constant({ 'io.modelcontextprotocol/protocolVersion': '2025-11-25', 'io.modelcontextprotocol/clientCapabilities': {} }),
  fc.constant({ 'io.modelcontextprotocol/protocolVersion': 7, 'io.modelcontextprotocol/clientCapabilities': {} }),
  fc.constant(null),
  fc.constant([])
)
/** Usually the well-formed value (so the fast path is often taken), sometimes each odd one. */
function mostly<T> (usual: fc.Arbitrary<T>, ...odd: Array<fc.Arbitrary<T>>): fc.Arbitrary<T> {
  return fc.oneof({ arbitrary: usual, weight: odd.length * 2 }, ...odd.map((arbitrary) => ({ arbitrary, weight: 1 })))
}
const toolName = mostly<unknown>(fc.constantFrom('whoami', 'bus_read'), fc.constant('nope'), fc.constant(7), fc.constant(undefined))
const body = fc.record({
  jsonrpc: mostly<unknown>(fc.constant('2.0'), fc.constant('1.0'), fc.constant(undefined)),
  id: mostly<unknown>(fc.oneof(fc.integer(), fc.string({ maxLength: 3 })), fc.constant(1.5), fc.constant(null), fc.constant(undefined), fc.constant({})),
  method: mostly<unknown>(fc.constant('tools/call'), fc.constant('tools/list'), fc.constant('initialize'), fc.constant(undefined)),
  params: mostly<unknown>(
    fc.record({
      name: toolName,
      arguments: mostly<unknown>(fc.constantFrom(undefined, {}, { wait_seconds: 2 }), fc.constant('x'), fc.constant(null), fc.constant([])),
      _meta: envelope
    }),
    fc.constant(undefined), fc.constant(null), fc.constant([1])
  ),
  extra: mostly<unknown>(fc.constant(undefined), fc.constant(1))
})
const headers = fc.record({
  'mcp-protocol-version': fc.constantFrom(undefined, MODERN, '2025-11-25', '2025-03-26', '2099-01-01', ' 2026-07-28', 'x'),
  'mcp-method': mostly(fc.constant<string | undefined>('tools/call'), fc.constant(undefined), fc.constant('tools/list')),
  'mcp-name': fc.constantFrom(undefined, 'whoami', 'bus_read', '7')
})

test('the fast path agrees with the SDK classifier and the post-classifier guard', async (t) => {
  // The envelopes a client would have sent before: the classifier accepts them once.
  for (const meta of VALID_ENVELOPES) {
    const request = asRequest({ 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': 'whoami' }, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {}, _meta: meta } })
    t.ok(directToolCall(request, classify(request)), 'a valid modern call is direct after classification')
    t.ok(fastToolCall(request), 'and then takes the fast path')
  }
  let fast = 0
  // Half the time the headers are what a client of the body's era would send.
  const exchange = body.chain((b) => fc.tuple(fc.oneof(headers, fc.constant(headersFor(b))), fc.constant(b)))
  t.comment(replayHint('fast path'))
  fc.assert(fc.property(exchange, ([rawHeaders, rawBody]) => {
    const cleanHeaders = Object.fromEntries(Object.entries(rawHeaders).filter(([, v]) => v !== undefined)) as Record<string, string>
    const cleanBody = dropUndefined(rawBody)
    if (isObject(cleanBody.params)) cleanBody.params = dropUndefined(cleanBody.params)
    const request = asRequest(cleanHeaders, cleanBody)
    const shortcut = fastToolCall(request)
    if (shortcut === undefined) return true
    fast++
    const route = classify(request)
    if (route.kind === 'reject') throw new Error(`fast path taken but the classifier rejects: ${route.message}`)
    if ((route.kind === 'modern') !== shortcut.modern) throw new Error(`fast path says modern=${shortcut.modern}, the classifier ${route.kind}`)
    const guarded = directToolCall(request, route)
    if (JSON.stringify(guarded) !== JSON.stringify(shortcut)) throw new Error(`fast ${JSON.stringify(shortcut)} != guarded ${JSON.stringify(guarded)}`)
    return true
  }), { numRuns: 20_000, seed: seedFor('fast path') })
  t.ok(fast > 100, `the fast path was taken ${fast} times (${replayHint('fast path')})`)
})

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function dropUndefined (value: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined))
}

function headersFor (body: Record<string, unknown>): Record<string, string | undefined> {
  const params = isObject(body.params) ? body.params : {}
  const meta = isObject(params._meta) ? params._meta : {}
  const version = meta['io.modelcontextprotocol/protocolVersion']
  if (typeof version !== 'string') return {}
  return { 'mcp-protocol-version': version, 'mcp-method': String(body.method), 'mcp-name': String(params.name) }
}
