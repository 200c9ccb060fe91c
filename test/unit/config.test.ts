import t from 'tap'
import { ConfigError, DEFAULT_ALLOWED_ORIGINS, loadConfig } from '../../src/config.ts'
import { isLoopbackHost } from '../../src/lib/loopback.ts'

t.test('defaults are the README\'s', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    port: 8088,
    host: 'localhost',
    publicUrl: 'http://localhost:8088',
    resourceUrl: 'http://localhost:8088/mcp',
    databaseUrl: undefined,
    dataDir: './data',
    adminPort: 8089,
    adminHost: '127.0.0.1',
    adminToken: undefined,
    autoApprovePrincipal: undefined,
    trustProxy: false,
    accessTokenTtl: 3600,
    refreshTokenTtl: 2592000,
    authCodeTtl: 120,
    rateLimitMultiplier: 1,
    logLevel: 'info'
  })
  t.same(config.allowedOrigins, [...DEFAULT_ALLOWED_ORIGINS, 'http://localhost:8088'])
})

t.test('PUBLIC_URL becomes the issuer: an origin without trailing slash', async (t) => {
  t.equal(loadConfig({ PUBLIC_URL: 'https://Bus.Example.com/' }).publicUrl, 'https://bus.example.com')
  t.equal(loadConfig({ PUBLIC_URL: 'https://bus.example.com:443' }).publicUrl, 'https://bus.example.com')
  t.equal(loadConfig({ PUBLIC_URL: 'https://bus.example.com:8443' }).resourceUrl, 'https://bus.example.com:8443/mcp')
  t.equal(loadConfig({ PUBLIC_URL: 'http://127.0.0.1:9000' }).publicUrl, 'http://127.0.0.1:9000')
  t.equal(loadConfig({ PUBLIC_URL: 'http://[::1]:9000' }).publicUrl, 'http://[::1]:9000')
  t.equal(loadConfig({ PUBLIC_URL: 'http://bus.lan', ALLOW_INSECURE_PUBLIC_URL: '1' }).publicUrl, 'http://bus.lan')
  t.equal(loadConfig({ PORT: '9999' }).publicUrl, 'http://localhost:9999', 'the default follows PORT')
})

t.test('ALLOWED_ORIGINS adds to the defaults', async (t) => {
  const config = loadConfig({ ALLOWED_ORIGINS: 'https://a.example, https://b.example:8443' })
  t.ok(config.allowedOrigins.includes('https://claude.ai'))
  t.ok(config.allowedOrigins.includes('https://a.example'))
  t.ok(config.allowedOrigins.includes('https://b.example:8443'))
})

t.test('TRUST_PROXY accepts booleans, names, addresses and CIDRs', async (t) => {
  t.equal(loadConfig({ TRUST_PROXY: 'loopback' }).trustProxy, 'loopback')
  t.equal(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 172.16.0.1' }).trustProxy, '10.0.0.0/8, 172.16.0.1')
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true)
  t.equal(loadConfig({ TRUST_PROXY: 'false' }).trustProxy, false)
})

t.test('ADMIN_HOST on loopback needs no token; elsewhere it does', async (t) => {
  t.equal(loadConfig({ ADMIN_HOST: '::1' }).adminHost, '::1')
  t.equal(loadConfig({ ADMIN_HOST: '0.0.0.0', ADMIN_TOKEN: 'x'.repeat(32) }).adminHost, '0.0.0.0')
})

const bad: Array<[Record<string, string>, string, RegExp]> = [
  [{ PORT: 'abc' }, 'PORT', /port number/],
  [{ PORT: '70000' }, 'PORT', /port number/],
  [{ PORT: '-1' }, 'PORT', /port number/],
  [{ ADMIN_PORT: '1.5' }, 'ADMIN_PORT', /port number/],
  [{ PORT: '9000', ADMIN_PORT: '9000' }, 'ADMIN_PORT', /same as PORT/],
  [{ PUBLIC_URL: 'not a url' }, 'PUBLIC_URL', /not a URL/],
  [{ PUBLIC_URL: 'ftp://bus.example.com' }, 'PUBLIC_URL', /http\(s\)/],
  [{ PUBLIC_URL: 'http://bus.example.com' }, 'PUBLIC_URL', /must use https/],
  [{ PUBLIC_URL: 'https://bus.example.com/mcp' }, 'PUBLIC_URL', /without a path/],
  [{ PUBLIC_URL: 'https://bus.example.com/?a=1' }, 'PUBLIC_URL', /query or fragment/],
  [{ PUBLIC_URL: 'https://bus.example.com#x' }, 'PUBLIC_URL', /query or fragment/],
  [{ PUBLIC_URL: 'https://user:pw@bus.example.com' }, 'PUBLIC_URL', /credentials/],
  [{ ALLOW_INSECURE_PUBLIC_URL: 'yes' }, 'ALLOW_INSECURE_PUBLIC_URL', /1 or 0/],
  [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL', /postgres:\/\//],
  [{ ADMIN_HOST: '0.0.0.0' }, 'ADMIN_HOST', /ADMIN_TOKEN/],
  [{ ADMIN_HOST: '10.1.2.3' }, 'ADMIN_HOST', /ADMIN_TOKEN/],
  [{ ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN', /at least 16/],
  [{ AUTO_APPROVE_PRINCIPAL: 'bad name!' }, 'AUTO_APPROVE_PRINCIPAL', /principal name/],
  [{ TRUST_PROXY: '2' }, 'TRUST_PROXY', /hop count/],
  [{ TRUST_PROXY: 'proxy.example.com' }, 'TRUST_PROXY', /not an IP/],
  [{ TRUST_PROXY: '10.0.0.0/40' }, 'TRUST_PROXY', /not an IP/],
  [{ ACCESS_TOKEN_TTL: '0' }, 'ACCESS_TOKEN_TTL', /seconds from 60/],
  [{ ACCESS_TOKEN_TTL: '1h' }, 'ACCESS_TOKEN_TTL', /seconds/],
  [{ REFRESH_TOKEN_TTL: '100' }, 'REFRESH_TOKEN_TTL', /seconds from 300/],
  [{ ACCESS_TOKEN_TTL: '7200', REFRESH_TOKEN_TTL: '3600' }, 'REFRESH_TOKEN_TTL', /shorter than ACCESS_TOKEN_TTL/],
  [{ AUTH_CODE_TTL: '3600' }, 'AUTH_CODE_TTL', /10 to 600/],
  [{ ALLOWED_ORIGINS: '*' }, 'ALLOWED_ORIGINS', /not an origin/],
  [{ ALLOWED_ORIGINS: 'https://a.example/path' }, 'ALLOWED_ORIGINS', /not an origin/],
  [{ ALLOWED_ORIGINS: 'claude.ai' }, 'ALLOWED_ORIGINS', /not an origin/],
  [{ RATE_LIMIT_MULTIPLIER: '-1' }, 'RATE_LIMIT_MULTIPLIER', /number from 0/],
  [{ RATE_LIMIT_MULTIPLIER: 'lots' }, 'RATE_LIMIT_MULTIPLIER', /number from 0/],
  [{ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', /one of/],
  [{ MESSAGE_RETENTION_DAYS: '1.5' }, 'MESSAGE_RETENTION_DAYS', /whole number/],
  [{ AUDIT_RETENTION_DAYS: 'forever' }, 'AUDIT_RETENTION_DAYS', /whole number/],
  [{ PORT: '8088.0' }, 'PORT', /port number/],
  [{ PORT: '0x50' }, 'PORT', /port number/],
  [{ ADMIN_PORT: 'abc' }, 'ADMIN_PORT', /port number/],
  [{ ADMIN_PORT: '65536' }, 'ADMIN_PORT', /port number/],
  [{ ADMIN_PORT: '8088' }, 'ADMIN_PORT', /same as PORT/],
  [{ HOST: '0.0.0.0', PORT: '9000', ADMIN_PORT: '9000' }, 'ADMIN_PORT', /same as PORT/],
  [{ PUBLIC_URL: 'https://' }, 'PUBLIC_URL', /not a URL/],
  [{ PUBLIC_URL: 'bus.example.com' }, 'PUBLIC_URL', /not a URL/],
  [{ PUBLIC_URL: 'http://10.0.0.5:8088' }, 'PUBLIC_URL', /must use https/],
  [{ PUBLIC_URL: 'http://bus.lan', ALLOW_INSECURE_PUBLIC_URL: '0' }, 'PUBLIC_URL', /must use https/],
  [{ PUBLIC_URL: 'https://bus.example.com/?' }, 'PUBLIC_URL', /query or fragment/],
  [{ DATABASE_URL: 'localhost:5432/bus' }, 'DATABASE_URL', /postgres:\/\//],
  [{ DATABASE_URL: 'postgres://bus:pw@db/bus?connect_timeout=0' }, 'DATABASE_URL', /^DATABASE_URL: connect_timeout must be a whole number of seconds from 1 to 3600$/],
  [{ DATABASE_URL: 'postgres://bus:pw@h1:5432,h2:5433/bus?sslmode=require&connect_timeout=2.5' }, 'DATABASE_URL', /connect_timeout must be a whole number/],
  [{ DATABASE_URL: 'postgres://bus:pw@db/bus?connect_timeout=5&connect_timeout=6' }, 'DATABASE_URL', /connect_timeout is given more than once/],
  [{ ADMIN_HOST: '::' }, 'ADMIN_HOST', /ADMIN_TOKEN/],
  [{ ADMIN_HOST: 'admin.example.com' }, 'ADMIN_HOST', /ADMIN_TOKEN/],
  [{ ADMIN_HOST: '0.0.0.0', ADMIN_TOKEN: 'fifteen-chars!!' }, 'ADMIN_TOKEN', /at least 16/],
  [{ AUTO_APPROVE_PRINCIPAL: 'x'.repeat(65) }, 'AUTO_APPROVE_PRINCIPAL', /principal name/],
  [{ AUTO_APPROVE_PRINCIPAL: '-leading-dash' }, 'AUTO_APPROVE_PRINCIPAL', /principal name/],
  [{ TRUST_PROXY: '0.0.0.0/0/1' }, 'TRUST_PROXY', /not an IP/],
  [{ TRUST_PROXY: 'loopback, nonsense' }, 'TRUST_PROXY', /not an IP/],
  [{ TRUST_PROXY: '::1/129' }, 'TRUST_PROXY', /not an IP/],
  [{ ACCESS_TOKEN_TTL: '59' }, 'ACCESS_TOKEN_TTL', /seconds from 60 to 604800/],
  [{ ACCESS_TOKEN_TTL: '604801' }, 'ACCESS_TOKEN_TTL', /seconds from 60 to 604800/],
  [{ ACCESS_TOKEN_TTL: '-60' }, 'ACCESS_TOKEN_TTL', /seconds/],
  [{ REFRESH_TOKEN_TTL: '31536001' }, 'REFRESH_TOKEN_TTL', /seconds from 300/],
  [{ REFRESH_TOKEN_TTL: '1e6' }, 'REFRESH_TOKEN_TTL', /seconds/],
  [{ AUTH_CODE_TTL: '9' }, 'AUTH_CODE_TTL', /10 to 600/],
  [{ AUTH_CODE_TTL: '60.5' }, 'AUTH_CODE_TTL', /seconds/],
  [{ ALLOWED_ORIGINS: 'https://*.example.com' }, 'ALLOWED_ORIGINS', /not an origin/],
  [{ ALLOWED_ORIGINS: 'https://ok.example, null' }, 'ALLOWED_ORIGINS', /"null" is not an origin/],
  [{ ALLOWED_ORIGINS: 'https://a.example?x=1' }, 'ALLOWED_ORIGINS', /not an origin/],
  [{ RATE_LIMIT_MULTIPLIER: '1001' }, 'RATE_LIMIT_MULTIPLIER', /number from 0 to 1000/],
  [{ RATE_LIMIT_MULTIPLIER: '1e2' }, 'RATE_LIMIT_MULTIPLIER', /number from 0/],
  [{ LOG_LEVEL: 'warning' }, 'LOG_LEVEL', /one of fatal, error, warn, info, debug, trace, silent/],
  [{ MESSAGE_RETENTION_DAYS: '-1' }, 'MESSAGE_RETENTION_DAYS', /whole number from 0 to 36500/],
  [{ MESSAGE_RETENTION_DAYS: '36501' }, 'MESSAGE_RETENTION_DAYS', /whole number from 0 to 36500/],
  [{ AUDIT_RETENTION_DAYS: '7.5' }, 'AUDIT_RETENTION_DAYS', /whole number/]
]

for (const [env, variable, message] of bad) {
  t.test(`${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')} is refused, naming ${variable}`, async (t) => {
    const error = t.throws(() => loadConfig(env)) as ConfigError
    t.type(error, ConfigError)
    t.equal(error.variable, variable)
    t.match(error.message, message)
    t.ok(error.message.startsWith(`${variable}: `), 'the message starts with the variable')
    t.notMatch(error.message, /\n/, 'one line')
  })
}

t.test('empty and blank values mean unset; LOG_LEVEL is case-insensitive; RATE_LIMIT_MULTIPLIER 0 is allowed', async (t) => {
  const config = loadConfig({ PORT: '', ADMIN_PORT: '   ', PUBLIC_URL: '', DATABASE_URL: ' ', LOG_LEVEL: 'DEBUG', RATE_LIMIT_MULTIPLIER: '0' })
  t.equal(config.port, 8088)
  t.equal(config.adminPort, 8089)
  t.equal(config.publicUrl, 'http://localhost:8088')
  t.equal(config.databaseUrl, undefined)
  t.equal(config.logLevel, 'debug')
  t.equal(config.rateLimitMultiplier, 0)
  t.equal(loadConfig({ RATE_LIMIT_MULTIPLIER: '0.5' }).rateLimitMultiplier, 0.5)
  t.equal(loadConfig({ DATABASE_URL: 'postgresql://u@db/bus' }).databaseUrl, 'postgresql://u@db/bus')
  t.equal(loadConfig({ DATABASE_URL: 'postgresql://u@db/bus?connect_timeout=30' }).databaseUrl, 'postgresql://u@db/bus?connect_timeout=30')
})

t.test('isLoopbackHost', async (t) => {
  for (const host of ['localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]', 'app.localhost']) t.ok(isLoopbackHost(host), host)
  for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com', 'localhost.example.com', '128.0.0.1']) t.notOk(isLoopbackHost(host), host)
})
