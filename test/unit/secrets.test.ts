import t from 'tap'
import {
  constantEquals, generateLoginCode, generateSecret, hashSecret, kindOfSecret, normaliseLoginCode, sha256Base64Url, TOKEN_PREFIX
} from '../../src/lib/secrets.ts'

t.test('generated secrets carry their kind\'s prefix and 256 bits of randomness', async (t) => {
  for (const kind of Object.keys(TOKEN_PREFIX) as Array<keyof typeof TOKEN_PREFIX>) {
    const secret = generateSecret(kind)
    t.ok(secret.startsWith(TOKEN_PREFIX[kind]), kind)
    t.match(secret.slice(TOKEN_PREFIX[kind].length), /^[A-Za-z0-9_-]{43}$/, `${kind} body is 32 bytes base64url`)
    t.equal(kindOfSecret(secret), kind)
  }
  const many = new Set(Array.from({ length: 1000 }, () => generateSecret('apiToken')))
  t.equal(many.size, 1000, 'no repeats')
})

t.test('a secret without a known prefix has no kind (legacy API tokens)', async (t) => {
  t.equal(kindOfSecret('abc123'), undefined)
  t.equal(kindOfSecret('bus_xx_abc'), undefined)
})

t.test('hashSecret is SHA-256 of the whole secret', async (t) => {
  t.equal(hashSecret('abc').toString('hex'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  t.not(hashSecret('bus_api_a').toString('hex'), hashSecret('bus_api_b').toString('hex'))
})

t.test('constantEquals compares exactly, whatever the lengths', async (t) => {
  t.ok(constantEquals('secret', 'secret'))
  t.notOk(constantEquals('secret', 'secreT'))
  t.notOk(constantEquals('secret', 'secret1'))
  t.notOk(constantEquals('', 'x'))
  t.ok(constantEquals('', ''))
  t.ok(constantEquals('ünïcode', 'ünïcode', 64))
  t.notOk(constantEquals('a\u0000', 'a'), 'a trailing NUL does not match the padding')
  t.notOk(constantEquals('é', 'e\u0301'), 'different code points')
})

t.test('login codes are short, typed by people, and normalised', async (t) => {
  const code = generateLoginCode()
  t.match(code, /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/)
  t.equal(normaliseLoginCode(code.toLowerCase().replace('-', ' ')), code)
  t.equal(normaliseLoginCode('abcde fghjk'), 'ABCDE-FGHJK')
  t.equal(normaliseLoginCode('oiL00-11111'), '01100-11111', 'O→0, I/L→1 as Crockford base32 reads them')
})

t.test('sha256Base64Url is the unpadded base64url SHA-256 (the S256 transform of RFC 7636 §4.2)', async (t) => {
  t.equal(sha256Base64Url('abc'), 'ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0')
  t.equal(sha256Base64Url('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'), 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'RFC 7636 Appendix B')
})

t.test('a typed login code of another length is normalised but not re-dashed', async (t) => {
  t.equal(normaliseLoginCode('abc-de'), 'ABCDE', 'five characters: no dash added')
  t.equal(normaliseLoginCode('abcde-fghjkm'), 'ABCDEFGHJKM', 'eleven characters: no dash added')
  t.equal(normaliseLoginCode(''), '')
})
