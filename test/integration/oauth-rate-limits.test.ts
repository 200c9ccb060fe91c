import t from 'tap'
import { startTestServer } from '../helpers/server.ts'

t.test('an endpoint\'s limit is shared by its paths (fallback aliases do not double it)', async (t) => {
  // Register: 20/hour × 0.1 = 2. Token: 50/15 min × 0.1 = 5.
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.1' } })
  const register = async (url: string): Promise<number> => (await server.app.inject({
    method: 'POST', url, payload: { redirect_uris: ['http://localhost/cb'], token_endpoint_auth_method: 'none' }
  })).statusCode
  t.equal(await register('/oauth/register'), 201)
  t.equal(await register('/register'), 201)
  const third = await server.app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['http://localhost/cb'] } })
  t.equal(third.statusCode, 429)
  t.ok(Number(third.headers['retry-after']) > 0, 'Retry-After')
  t.equal(third.json().error, 'too_many_requests')
  t.equal(await register('/register'), 429, 'the alias shares the count')

  const token = async (url: string, remoteAddress = '127.0.0.1'): Promise<number> => (await server.app.inject({
    method: 'POST', url, remoteAddress, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=client_credentials&client_id=nobody'
  })).statusCode
  const statuses = []
  for (let i = 0; i < 6; i++) statuses.push(await token(i % 2 === 0 ? '/oauth/token' : '/token'))
  t.same(statuses, [401, 401, 401, 401, 401, 429], 'five tries across both paths, then 429')
  t.equal(await token('/token', '10.9.8.7'), 401, 'another address has its own count')
})
