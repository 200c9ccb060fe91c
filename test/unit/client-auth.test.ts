import t from 'tap'
import { readClientCredentials } from '../../src/oauth/client-auth.ts'
import { OAuthError } from '../../src/oauth/errors.ts'

const basic = (raw: string): string => `Basic ${Buffer.from(raw, 'utf8').toString('base64')}`
/** The OAuth error code `fn` throws, or 'none'. */
function errorOf (fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof OAuthError) return `${err.error}: ${err.description}`
    throw err
  }
  return 'none'
}

t.test('Basic credentials: client id and secret, form-urlencoded before base64 (RFC 6749 §2.3.1)', async (t) => {
  t.same(readClientCredentials(basic('client_abc:s3cret'), {}), { clientId: 'client_abc', secret: 's3cret', method: 'client_secret_basic' })
  t.same(readClientCredentials(basic('client%3Aabc:a%2Bb+c%25'), {}), { clientId: 'client:abc', secret: 'a+b c%', method: 'client_secret_basic' }, 'percent-escapes and + are decoded')
  t.same(readClientCredentials(basic('client_abc:se:cret'), {}), { clientId: 'client_abc', secret: 'se:cret', method: 'client_secret_basic' }, 'the first colon splits; the secret may hold more')
  t.same(readClientCredentials(basic('client_abc:'), {}), { clientId: 'client_abc', secret: undefined, method: 'client_secret_basic' }, 'an empty secret is no secret')
  t.same(readClientCredentials(basic('c:x'), {}), { clientId: 'c', secret: 'x', method: 'client_secret_basic' }, 'a one-character client id')
  for (const scheme of ['basic', 'BASIC', 'bAsIc']) {
    t.same(readClientCredentials(`${scheme} ${Buffer.from('client_abc:s').toString('base64')}`, {}).clientId, 'client_abc', `the scheme is case-insensitive (${scheme})`)
  }
  t.same(readClientCredentials(`Basic   ${Buffer.from('client_abc:s').toString('base64')}  `, {}).secret, 's', 'extra spaces around the credentials')
  t.same(readClientCredentials(basic('client_abc:s'), { client_id: 'client_abc' }).clientId, 'client_abc', 'the same client_id in the body is allowed')
})

t.test('malformed Basic headers are invalid_client', async (t) => {
  const malformed = [
    'Basic', 'Basic ', 'Basic !!!', 'Basic abc def', `Basic ${Buffer.from('client_abc:s').toString('base64')}\tx`, basic('no-colon'), basic(':secret-without-id'),
    basic('%zz:secret'), basic('client_abc:%zz'), `Basic\t${Buffer.from('client_abc:s').toString('base64')}`, `xBasic ${Buffer.from('client_abc:s').toString('base64')}`,
    `Basic junk Basic ${Buffer.from('client_abc:s').toString('base64')}`
  ]
  for (const header of malformed) {
    const error = errorOf(() => readClientCredentials(header, {}))
    if (header.startsWith('xBasic')) {
      // Not the Basic scheme at all: the body decides, and it names no client.
      t.match(error, /^invalid_client: Client authentication required/, JSON.stringify(header))
    } else {
      t.equal(error, 'invalid_client: Malformed Basic authorization header', JSON.stringify(header))
    }
  }
})

t.test('two authentication methods at once are refused (RFC 6749 §2.3)', async (t) => {
  t.equal(errorOf(() => readClientCredentials(basic('client_abc:s'), { client_secret: 's' })), 'invalid_request: Use one client authentication method: Basic or client_secret in the body, not both')
  t.equal(errorOf(() => readClientCredentials(basic('client_abc:s'), { client_secret: '' })), 'invalid_request: Use one client authentication method: Basic or client_secret in the body, not both', 'even an empty body secret')
  t.equal(errorOf(() => readClientCredentials(basic('client_abc:s'), { client_id: 'client_other' })), 'invalid_request: client_id in the body differs from the Basic credentials')
})

t.test('credentials in the body: public (none) or client_secret_post', async (t) => {
  t.same(readClientCredentials(undefined, { client_id: 'client_abc' }), { clientId: 'client_abc', secret: undefined, method: 'none' })
  t.same(readClientCredentials(undefined, { client_id: 'client_abc', client_secret: 's' }), { clientId: 'client_abc', secret: 's', method: 'client_secret_post' })
  t.same(readClientCredentials('Bearer xyz', { client_id: 'client_abc' }), { clientId: 'client_abc', secret: undefined, method: 'none' }, 'another Authorization scheme is not client authentication')
  t.same(readClientCredentials('Basically x', { client_id: 'client_abc' }), { clientId: 'client_abc', secret: undefined, method: 'none' }, 'a scheme that only starts with "Basic"')
  t.equal(errorOf(() => readClientCredentials(undefined, {})), 'invalid_client: Client authentication required: send client_id (and client_secret for confidential clients)')
  t.equal(errorOf(() => readClientCredentials(undefined, { client_secret: 's' })), 'invalid_client: Client authentication required: send client_id (and client_secret for confidential clients)', 'a secret without a client id')
})
