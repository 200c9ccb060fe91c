import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { auth } from '@modelcontextprotocol/sdk/client/auth.js'
import { sql } from 'drizzle-orm'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { rowsOf } from '../../src/db/client.ts'
import { linkIdentity } from '../../src/idp/identities.ts'
import { createPrincipal, setPrincipalDisabled } from '../../src/principals/store.ts'
import { startLoginProvider, LOGIN_CLIENT_SECRET, type LoginProvider } from '../helpers/login-provider.ts'
import { TestOAuthProvider } from '../helpers/oauth.ts'
import { chromiumBinary, fileNeeds } from '../helpers/requirements.ts'
import { callTool, freePort, principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'

// Sign in with an identity provider on the consent page (docs/decisions/0030): Chromium drives our
// consent page and oidc-provider's development login form, run in-process on loopback.
// SCREENSHOT_DIR=docs/images renews the README's screenshots.
const needed = chromiumBinary()
if (fileNeeds(t, [needed])) {
  let browser: Browser
  let corp: LoginProvider
  let autoIdp: LoginProvider
  let server: TestServer
  let defaultServer: TestServer
  let httpsServer: TestServer
  let defaultDownServer: TestServer
  const received: URL[] = []
  let appUrl = ''

  const callbackOf = (s: TestServer, id: string): string => `${s.config.publicUrl}/oauth/idp/${id}/callback`

  t.before(async () => {
    browser = await chromium.launch({ executablePath: needed.path, args: ['--no-sandbox'] })
    ;[corp, autoIdp] = await Promise.all([startLoginProvider(), startLoginProvider()])
    const dir = mkdtempSync(join(tmpdir(), 'bus-idp-login-'))
    t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
    const login = (label: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
      ({ client_id: 'bus-mcp', client_secret: LOGIN_CLIENT_SECRET, scopes: ['openid', 'profile'], label, ...extra })
    const down = `http://127.0.0.1:${await freePort()}`
    writeFileSync(join(dir, 'idp.json'), JSON.stringify({
      providers: [
        { id: 'corp', issuer: corp.issuer, login: login('Corp') },
        { id: 'auto', issuer: autoIdp.issuer, principals: 'auto', auto_scopes: ['bus:read'], login: login('Contractors') },
        { id: 'down', issuer: down, login: login('Partner SSO') }
      ]
    }))
    writeFileSync(join(dir, 'default.json'), JSON.stringify({ providers: [{ id: 'corp', issuer: corp.issuer, login: login('Corp', { default: true }) }] }))
    writeFileSync(join(dir, 'default-down.json'), JSON.stringify({ providers: [{ id: 'down', issuer: down, login: login('Partner SSO', { default: true }) }] }))
    ;[server, defaultServer, httpsServer, defaultDownServer] = await Promise.all([
      startTestServer(t, { listen: true, logLevel: 'info', env: { IDP_FILE: join(dir, 'idp.json') } }),
      startTestServer(t, { listen: true, env: { IDP_FILE: join(dir, 'default.json') } }),
      startTestServer(t, { env: { IDP_FILE: join(dir, 'idp.json'), PUBLIC_URL: 'https://bus.example.test' } }),
      startTestServer(t, { env: { IDP_FILE: join(dir, 'default-down.json') } })
    ])
    corp.allow([callbackOf(server, 'corp'), callbackOf(defaultServer, 'corp')])
    autoIdp.allow([callbackOf(server, 'auto')])
    for (const s of [server, defaultServer]) {
      await createPrincipal(s.database.db, 'alice', 'bus:read bus:write')
      await linkIdentity(s.database.db, { provider: 'corp', subject: 'alice-sub', principal: 'alice' }, ['corp', 'auto', 'down'])
    }
    // The client app's redirect target.
    const app = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1')
      if (url.pathname === '/callback') received.push(url)
      res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>Connected</h1>')
    })
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
    t.teardown(() => app.close())
    appUrl = `http://127.0.0.1:${(app.address() as { port: number }).port}/callback`
  })
  t.teardown(async () => {
    await browser?.close()
    await Promise.all([corp?.stop(), autoIdp?.stop()])
  })

  /** A fresh browser profile: no cookies, no session at the provider. Nothing leaves loopback. */
  async function newContext (t: Test): Promise<{ context: BrowserContext, page: Page }> {
    const context = await browser.newContext({ viewport: { width: 720, height: 820 } })
    t.teardown(() => context.close())
    // oidc-provider's pages import a web font; there is no internet here.
    await context.route(/^https:/, async (route) => { await route.abort() })
    return { context, page: await context.newPage() }
  }

  /** What an MCP app does first: auth() registers the client and produces the authorization URL. */
  async function startConnection (t: Test, s: TestServer): Promise<{ provider: TestOAuthProvider, url: string }> {
    // The SDK sends a state only when the app's provider makes one.
    const provider = Object.assign(new TestOAuthProvider(appUrl), { state: () => 'app-state' })
    t.equal(await auth(provider, { serverUrl: new URL(`${s.baseUrl}/mcp`) }), 'REDIRECT')
    const url = provider.authorizationUrl?.toString() ?? ''
    t.ok(url.startsWith(`${s.baseUrl}/oauth/authorize?`), 'our authorization endpoint')
    return { provider, url }
  }

  /** oidc-provider's login form (any login name becomes `sub`), then its consent screen. */
  async function signInAtProvider (page: Page, login: string, beforeConsent?: () => Promise<void>): Promise<void> {
    await page.locator('input[name=login]').fill(login)
    await page.locator('input[name=password]').fill('anything')
    await page.getByRole('button', { name: 'Sign-in' }).click()
    await page.getByRole('button', { name: 'Continue' }).waitFor()
    await beforeConsent?.()
    await Promise.all([page.waitForURL(/\/oauth\/idp\/\w+\/callback/), page.getByRole('button', { name: 'Continue' }).click()])
  }

  /** The app's side after the browser came back: the code for tokens, then whoami. */
  async function finishConnection (t: Test, s: TestServer, provider: TestOAuthProvider, page: Page): Promise<Record<string, unknown>> {
    const landed = new URL(page.url())
    t.equal(landed.origin + landed.pathname, appUrl, 'back at the app')
    t.equal(landed.searchParams.get('iss'), s.config.publicUrl)
    const code = landed.searchParams.get('code')
    t.ok(code, `a code (${landed.searchParams.get('error') ?? ''})`)
    t.equal(await auth(provider, { serverUrl: new URL(`${s.baseUrl}/mcp`), authorizationCode: code ?? '' }), 'AUTHORIZED')
    return (await callTool(s, provider.savedTokens?.access_token ?? '', 'whoami')).data
  }

  async function screenshot (page: Page, name: string): Promise<void> {
    const dir = process.env.SCREENSHOT_DIR
    if (dir === undefined || dir === '') return
    mkdirSync(dir, { recursive: true })
    await page.screenshot({ path: join(dir, name), fullPage: true })
  }

  t.test('sign in with Corp: consent page → provider login → approve → whoami names the linked principal', async (t) => {
    const { context, page } = await newContext(t)
    const { provider, url } = await startConnection(t, server)
    await page.goto(url)
    const link = page.getByRole('link', { name: 'Sign in with Corp' })
    t.match(await link.getAttribute('href'), /^\/oauth\/idp\/corp\/start\?transaction=/)
    t.equal(await page.getByRole('link', { name: 'Sign in with Contractors' }).count(), 1, 'one link per provider with login')
    t.equal(await page.getByLabel('Your API token or one-time login code').count(), 1, 'the token form stays beside it')
    await screenshot(page, 'consent-sign-in.png')

    const start = page.waitForResponse((r) => r.url().includes('/oauth/idp/corp/start'))
    await link.click()
    const startResponse = await start
    t.equal(startResponse.status(), 302)
    t.equal(startResponse.headers()['cache-control'], 'no-store')
    t.equal(startResponse.headers()['referrer-policy'], 'no-referrer')
    await page.locator('input[name=login]').waitFor()
    t.ok(page.url().startsWith(`${corp.issuer}/interaction/`), 'at the provider\'s login form')
    const binding = (await context.cookies(server.baseUrl + '/oauth/idp/corp/callback')).find((c) => c.name.startsWith('bus_idp_'))
    t.match(binding, { path: '/oauth/idp/', httpOnly: true, sameSite: 'Lax', secure: false }, 'the browser binding: Lax (the callback comes from another site), httpOnly')

    const callback = page.waitForResponse((r) => r.url().includes('/oauth/idp/corp/callback'))
    await signInAtProvider(page, 'alice-sub')
    const callbackResponse = await callback
    t.equal(callbackResponse.status(), 200)
    const headers = callbackResponse.headers()
    t.equal(headers['x-frame-options'], 'DENY')
    t.match(headers['content-security-policy'], /frame-ancestors 'none'/)
    t.match(headers['content-security-policy'], /form-action 'self' http:\/\/127\.0\.0\.1:\d+/)
    t.equal(headers['cache-control'], 'no-store')
    t.equal(await page.locator('#principal').textContent(), 'alice')
    t.match(await page.locator('#signed-in').textContent(), /Signed in as alice via Corp/)
    t.equal(await page.getByLabel('Your API token or one-time login code').count(), 0, 'no credential field once signed in')
    t.equal((await context.cookies(server.baseUrl + '/oauth/idp/corp/callback')).filter((c) => c.name.startsWith('bus_idp_')).length, 0, 'the binding cookie is spent')
    const consentCookies = (await context.cookies(server.baseUrl)).filter((c) => c.name.startsWith('bus_consent_'))
    t.equal(consentCookies.length, 1, 'one consent cookie: the new page\'s (the old one was dropped)')
    t.match(consentCookies[0], { httpOnly: true, sameSite: 'Strict', path: '/' })
    await screenshot(page, 'consent-signed-in.png')

    await Promise.all([page.waitForURL((u) => u.toString().startsWith(appUrl)), page.getByRole('button', { name: 'Approve' }).click()])
    const me = await finishConnection(t, server, provider, page)
    t.equal(me.principal, 'alice')
    t.equal(me.auth, 'oauth')

    await server.runtime.audit.flush()
    const { entries } = await (await fetch(`${server.adminUrl}/audit?limit=100`)).json() as { entries: Array<Record<string, unknown>> }
    t.ok(entries.some((e) => e.action === 'sign_in' && e.outcome === 'ok' && e.principal === 'alice' && e.detail === 'idp:corp'), 'the sign-in is audited')
    t.ok(entries.some((e) => e.action === 'authorize' && e.outcome === 'ok' && e.principal === 'alice' && e.detail === 'idp:corp'), 'so is the approval, naming the provider')
    const logs = server.logs.join('\n')
    t.match(logs, /oauth\/idp\/corp\/callback\?.*code=\[redacted\]/, 'the request log hides the provider\'s code')
    t.notMatch(logs, LOGIN_CLIENT_SECRET, 'the client secret is never logged')
  })

  t.test('principals: auto creates the principal at first sign-in, named from the ID token', async (t) => {
    const { page } = await newContext(t)
    const { provider, url } = await startConnection(t, server)
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Contractors' }).click()
    await signInAtProvider(page, 'newbie')
    t.equal(await page.locator('#principal').textContent(), 'newbie')
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(appUrl)), page.getByRole('button', { name: 'Approve' }).click()])
    const me = await finishConnection(t, server, provider, page)
    t.equal(me.principal, 'newbie')
    t.same(me.scopes, ['bus:read'], 'auto_scopes')
  })

  t.test('an unlinked subject: the page names the provider, the subject and the command; the request stays usable', async (t) => {
    const token = await principalWithToken(server, 'carol')
    const { page } = await newContext(t)
    const { provider, url } = await startConnection(t, server)
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    const callback = page.waitForResponse((r) => r.url().includes('/oauth/idp/corp/callback'))
    await signInAtProvider(page, "o'stranger")
    t.equal((await callback).status(), 403)
    const error = await page.locator('#error').textContent() ?? ''
    t.match(error, /signed in at Corp as "o'stranger"/)
    t.match(error, /not linked to a principal/)
    t.equal(await page.locator('#command').textContent(), "npx bus-mcp identity link --provider corp --subject 'o'\\''stranger' --principal NAME")
    // The same request, proven the other way.
    await page.getByLabel('Your API token or one-time login code').fill(token)
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(appUrl)), page.getByRole('button', { name: 'Approve' }).click()])
    t.equal((await finishConnection(t, server, provider, page)).principal, 'carol')
  })

  t.test('a disabled principal cannot sign in', async (t) => {
    await createPrincipal(server.database.db, 'dora', 'bus:read')
    await linkIdentity(server.database.db, { provider: 'corp', subject: 'dora-sub', principal: 'dora' }, ['corp'])
    await setPrincipalDisabled(server.database.db, 'dora', true)
    const { page } = await newContext(t)
    const { url } = await startConnection(t, server)
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    await signInAtProvider(page, 'dora-sub')
    t.match(await page.locator('#error').textContent(), /principal dora, which is disabled/)
    t.equal(await page.locator('#signed-in').count(), 0)
  })

  t.test('cancel at the provider: the client gets access_denied with its state', async (t) => {
    const { page } = await newContext(t)
    const { url } = await startConnection(t, server)
    const before = received.length
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    await page.locator('input[name=login]').waitFor()
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(appUrl)), page.getByRole('link', { name: '[ Cancel ]' }).click()])
    const landed = new URL(page.url())
    t.equal(landed.searchParams.get('error'), 'access_denied')
    t.equal(landed.searchParams.get('iss'), server.config.publicUrl)
    t.equal(landed.searchParams.get('state'), 'app-state', 'the client\'s state comes back')
    t.equal(landed.searchParams.get('code'), null)
    t.equal(received.length, before + 1)
  })

  t.test('a replayed callback is refused', async (t) => {
    const { page } = await newContext(t)
    const { url } = await startConnection(t, server)
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    await signInAtProvider(page, 'alice-sub')
    t.equal(await page.locator('#principal').textContent(), 'alice')
    const replay = await page.goto(page.url())
    t.equal(replay?.status(), 400)
    t.match(await page.locator('#error').textContent(), /already come back once/)
    t.equal(replay?.headers()['x-frame-options'], 'DENY')
  })

  t.test('a callback in another browser is refused, and the right browser can still finish', async (t) => {
    const a = await newContext(t)
    const b = await newContext(t)
    const { url } = await startConnection(t, server)
    await a.page.goto(url)
    await a.page.getByRole('link', { name: 'Sign in with Corp' }).click()
    await a.page.locator('input[name=login]').fill('alice-sub')
    await a.page.locator('input[name=password]').fill('anything')
    await a.page.getByRole('button', { name: 'Sign-in' }).click()
    // Browser A stops where the provider sends it back: the callback URL is held, not sent to us.
    corp.hold = true
    try {
      await a.page.getByRole('button', { name: 'Continue' }).click()
      await a.page.getByText('held').waitFor()
    } finally {
      corp.hold = false
    }
    const captured = corp.held.pop() ?? ''
    t.match(captured, /\/oauth\/idp\/corp\/callback\?.*state=[\w-]+/)
    const other = await b.page.goto(captured)
    t.equal(other?.status(), 403)
    t.match(await b.page.locator('#error').textContent(), /started in another browser/)
    await a.page.goto(captured)
    t.equal(await a.page.locator('#principal').textContent(), 'alice', 'the refusal did not spend the sign-in')
  })

  t.test('a forged ID token (same kid, another key) is refused; no code', async (t) => {
    const { page } = await newContext(t)
    const { url } = await startConnection(t, server)
    const before = received.length
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    corp.tamper = 'id_token'
    try {
      const callback = page.waitForResponse((r) => r.url().includes('/oauth/idp/corp/callback'))
      await signInAtProvider(page, 'alice-sub')
      const response = await callback
      t.equal(response.status(), 502)
      t.equal(response.headers()['content-security-policy']?.includes("frame-ancestors 'none'"), true)
    } finally {
      corp.tamper = undefined
    }
    t.match(await page.locator('#error').textContent(), /could not be verified/)
    t.equal(await page.locator('#signed-in').count(), 0)
    t.equal(received.length, before, 'nothing reached the app')
    const logged = server.logs.filter((line) => line.includes('answer failed verification'))
    t.equal(logged.length, 1, 'the refusal is logged once')
    t.match(logged[0], /"provider":"corp".*"check":"OAUTH_INVALID_RESPONSE".*"reason":"invalid response encountered".*"detail":"[^"]*signature/)
    t.notMatch(server.logs.join('\n'), /eyJ[\w-]+\.eyJ/, 'no token in the logs')
  })

  t.test('a nonce that does not match the sign-in is refused', async (t) => {
    const { page } = await newContext(t)
    const { url } = await startConnection(t, server)
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    const callback = page.waitForResponse((r) => r.url().includes('/oauth/idp/corp/callback'))
    await signInAtProvider(page, 'alice-sub', async () => {
      // The stored nonce no longer matches the one the provider puts in the ID token.
      await server.database.db.execute(sql`update oauth_idp_logins set nonce = 'not-the-one-sent' where consumed_at is null`)
    })
    t.equal((await callback).status(), 502)
    t.match(await page.locator('#error').textContent(), /could not be verified/)
    t.ok(server.logs.some((line) => line.includes('answer failed verification') && line.includes('nonce')), 'the log says which check failed')
  })

  t.test('a token endpoint error ends on a page', async (t) => {
    const { page } = await newContext(t)
    const { url } = await startConnection(t, server)
    await page.goto(url)
    await page.getByRole('link', { name: 'Sign in with Corp' }).click()
    corp.tamper = 'error'
    try {
      const callback = page.waitForResponse((r) => r.url().includes('/oauth/idp/corp/callback'))
      await signInAtProvider(page, 'alice-sub')
      t.equal((await callback).status(), 502)
    } finally {
      corp.tamper = undefined
    }
    t.match(await page.locator('#error').textContent(), /Corp refused to complete the sign-in \(invalid_grant\)/)
  })

  t.test('login.default: the authorization request goes straight to the provider; consent still follows', async (t) => {
    const { page } = await newContext(t)
    const { provider, url } = await startConnection(t, defaultServer)
    await page.goto(url)
    t.ok(page.url().startsWith(`${corp.issuer}/interaction/`), 'no choice page: at the provider\'s login form')
    await signInAtProvider(page, 'alice-sub')
    t.equal(await page.locator('#principal').textContent(), 'alice')
    await Promise.all([page.waitForURL((u) => u.toString().startsWith(appUrl)), page.getByRole('button', { name: 'Approve' }).click()])
    t.equal((await finishConnection(t, defaultServer, provider, page)).principal, 'alice')
  })

  t.test('the start link: browser checks, headers, unreachable provider (no browser)', async (t) => {
    const { url } = await startConnection(t, server)
    const path = url.slice(server.baseUrl.length)
    const page = await server.app.inject({ method: 'GET', url: path })
    t.equal(page.statusCode, 200)
    const transaction = /name="transaction" value="([^"]+)"/.exec(page.body)?.[1] ?? ''
    const csrf = String(page.headers['set-cookie']).split(';')[0] ?? ''
    t.match(page.body, `href="/oauth/idp/corp/start?transaction=${transaction}"`)
    const start = (provider: string, headers: Record<string, string> = {}) =>
      server.app.inject({ method: 'GET', url: `/oauth/idp/${provider}/start?transaction=${encodeURIComponent(transaction)}`, headers })
    const expectPage = (response: Awaited<ReturnType<typeof start>>, status: number, text: RegExp): void => {
      t.equal(response.statusCode, status, `status ${status}`)
      t.match(response.body, text)
      t.equal(response.headers['x-frame-options'], 'DENY')
      t.match(response.headers['content-security-policy'], /default-src 'none'.*frame-ancestors 'none'/)
      t.equal(response.headers['cache-control'], 'no-store')
      t.notMatch(response.body, /at .*\.ts:\d+/, 'no stack trace')
    }

    expectPage(await start('corp'), 403, /missing or wrong security cookie/)
    expectPage(await start('corp', { cookie: csrf, 'sec-fetch-site': 'cross-site' }), 403, /opened from another site/)
    expectPage(await start('nope', { cookie: csrf }), 404, /no sign-in with that provider/)
    expectPage(await start('down', { cookie: csrf }), 503, /cannot reach Partner SSO/)

    const ok = await start('corp', { cookie: csrf, 'sec-fetch-site': 'same-origin' })
    t.equal(ok.statusCode, 302)
    const location = new URL(String(ok.headers.location))
    t.equal(location.origin, corp.issuer)
    t.match(Object.fromEntries(location.searchParams), {
      client_id: 'bus-mcp',
      response_type: 'code',
      scope: 'openid profile',
      redirect_uri: `${server.config.publicUrl}/oauth/idp/corp/callback`,
      code_challenge_method: 'S256',
      code_challenge: /^[\w-]{43}$/,
      state: /^[\w-]{40,}$/,
      nonce: /^[\w-]{40,}$/
    })
    t.match(String(ok.headers['set-cookie']), /^bus_idp_[0-9a-f]{16}=[\w-]+; Max-Age=\d+; Path=\/oauth\/idp\/; HttpOnly; SameSite=Lax$/)

    const answer = (query: string) => server.app.inject({ method: 'GET', url: `/oauth/idp/corp/callback${query}` })
    expectPage(await answer(''), 400, /names no sign-in/)
    expectPage(await answer('?state=forged&code=x'), 400, /did not start this sign-in/)
    expectPage(await answer(`?state=${location.searchParams.get('state') ?? ''}&code=x`), 403, /started in another browser/)
    const rows = rowsOf<{ expires_at: Date, pending_expires: Date }>(await server.database.db.execute(sql`
      select l.expires_at, p.expires_at as pending_expires from oauth_idp_logins l join oauth_pending_authorizations p on p.id = l.pending_authorization_id
      order by l.id desc limit 1`))
    t.ok(new Date(rows[0]?.expires_at ?? 0) <= new Date(rows[0]?.pending_expires ?? 0), 'a sign-in never outlives its pending authorization')
  })

  t.test('login.default with the provider unreachable: the consent page, with the reason and the other ways (no browser)', async (t) => {
    const provider = new TestOAuthProvider(appUrl)
    const registered = await defaultDownServer.app.inject({ method: 'POST', url: '/oauth/register', payload: provider.clientMetadata })
    const page = await defaultDownServer.app.inject({
      method: 'GET',
      url: `/oauth/authorize?${new URLSearchParams({ client_id: registered.json().client_id, redirect_uri: appUrl, response_type: 'code', code_challenge: 'a'.repeat(43), code_challenge_method: 'S256' }).toString()}`
    })
    t.equal(page.statusCode, 503)
    t.equal(page.headers['x-frame-options'], 'DENY')
    t.match(page.body, /cannot reach Partner SSO to sign you in right now/)
    t.match(page.body, /Sign in with Partner SSO/, 'the button to try again')
    t.match(page.body, /name="credential"/, 'and the token form')
  })

  t.test('on an https PUBLIC_URL the binding cookie is Secure', async (t) => {
    const provider = new TestOAuthProvider('https://app.example.test/callback')
    const registered = await httpsServer.app.inject({ method: 'POST', url: '/oauth/register', payload: provider.clientMetadata })
    const clientId = registered.json().client_id as string
    const page = await httpsServer.app.inject({
      method: 'GET',
      url: `/oauth/authorize?${new URLSearchParams({ client_id: clientId, redirect_uri: 'https://app.example.test/callback', response_type: 'code', code_challenge: 'a'.repeat(43), code_challenge_method: 'S256' }).toString()}`
    })
    t.equal(page.statusCode, 200)
    t.match(String(page.headers['set-cookie']), /; Secure; SameSite=Strict$/)
    const transaction = /name="transaction" value="([^"]+)"/.exec(page.body)?.[1] ?? ''
    const started = await httpsServer.app.inject({
      method: 'GET', url: `/oauth/idp/corp/start?transaction=${encodeURIComponent(transaction)}`, headers: { cookie: String(page.headers['set-cookie']).split(';')[0] ?? '' }
    })
    t.equal(started.statusCode, 302)
    t.match(String(started.headers['set-cookie']), /; Path=\/oauth\/idp\/; HttpOnly; Secure; SameSite=Lax$/)
    t.equal(new URL(String(started.headers.location)).searchParams.get('redirect_uri'), 'https://bus.example.test/oauth/idp/corp/callback')
  })
}
