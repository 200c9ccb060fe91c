import t from 'tap'
import { bearerChallenge } from '../../src/auth/challenge.ts'

const prm = 'http://localhost:8088/.well-known/oauth-protected-resource/mcp'

t.test('no credentials: resource_metadata and scope, no error code (RFC 6750 §3.1)', async (t) => {
  t.equal(
    bearerChallenge({ resourceMetadataUrl: prm, scope: 'bus:read bus:write' }),
    `Bearer resource_metadata="${prm}", scope="bus:read bus:write"`
  )
  t.equal(bearerChallenge({ resourceMetadataUrl: prm }), `Bearer resource_metadata="${prm}"`)
})

t.test('invalid_token carries the error, its description and resource_metadata', async (t) => {
  t.equal(
    bearerChallenge({ resourceMetadataUrl: prm, error: 'invalid_token', errorDescription: 'The access token expired' }),
    `Bearer error="invalid_token", error_description="The access token expired", resource_metadata="${prm}"`
  )
})

t.test('insufficient_scope names the scope needed (step-up)', async (t) => {
  t.equal(
    bearerChallenge({ resourceMetadataUrl: prm, error: 'insufficient_scope', scope: 'bus:write' }),
    `Bearer error="insufficient_scope", resource_metadata="${prm}", scope="bus:write"`
  )
})

t.test('quoted strings escape quotes and backslashes and drop what a header cannot carry', async (t) => {
  const value = bearerChallenge({ resourceMetadataUrl: prm, error: 'invalid_request', errorDescription: 'say "hi" \\ then\r\nX-Injected: 1\u00e9' })
  t.equal(value, `Bearer error="invalid_request", error_description="say \\"hi\\" \\\\ thenX-Injected: 1", resource_metadata="${prm}"`)
  t.notMatch(value, /[\r\n]/, 'no header injection')
  t.notMatch(value, /[^\x20-\x7e]/, 'only visible ASCII and spaces')
})
