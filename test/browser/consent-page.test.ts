import { chromium, type Browser } from 'playwright-core'
import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import { TestOAuthProvider, pkcePair } from '../helpers/oauth.ts'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'
import { chromiumBinary, fileNeeds } from '../helpers/requirements.ts'

// .ci/run installs Debian's chromium; elsewhere the file skips with the reason (fails under REQUIRE_FULL_SUITE).
const needed = chromiumBinary()
const CHROMIUM = needed.path
if (fileNeeds(t, [needed])) {
  let browser: Browser
  t.before(async () => { browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }) })
  t.teardown(async () => { await browser?.close() })

  /** A loopback "app" receiving the redirect, so the browser has somewhere real to land. */
  async function callbackServer (t: Test): Promise<{ url: string, received: URL[] }> {
    const received: URL[] = []
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1')
      if (url.pathname === '/callback') received.push(url)
      res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>Connected</h1>')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => server.close())
    const address = server.address() as { port: number }
    return { url: `http://127.0.0.1:${address.port}/callback`, received }
  }

  async function authorizationUrl (server: TestServer, redirectUri: string): Promise<{ url: string, clientId: string }> {
    const registration = await fetch(`${server.baseUrl}/oauth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...new TestOAuthProvider(redirectUri).clientMetadata, client_name: 'Browser <Test> App' })
    })
    const { client_id: clientId } = await registration.json() as { client_id: string }
    const { challenge } = pkcePair()
    const url = new URL(`${server.baseUrl}/oauth/authorize`)
    url.search = new URLSearchParams({
      client_id: clientId,
      redirect_uri: redirectUri,
      response_type: 'code',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state: 'xyz',
      scope: 'bus:read bus:write',
      resource: server.config.resourceUrl
    }).toString()
    return { url: url.toString(), clientId }
  }

  t.test('approve with an API token lands on the app with a code, state and iss', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const token = await principalWithToken(server, 'alice')
    const app = await callbackServer(t)
    const { url } = await authorizationUrl(server, app.url)
    const page = await browser.newPage()
    t.teardown(() => page.close())
    const response = await page.goto(url)
    t.equal(response?.headers()['x-frame-options'], 'DENY')
    t.match(response?.headers()['content-security-policy'], /frame-ancestors 'none'/)
    t.equal(await page.locator('#client-name').textContent(), 'Browser <Test> App', 'the client name is shown as text, not markup')
    t.match(await page.locator('#redirect-host').textContent(), /^127\.0\.0\.1:\d+$/)
    await page.getByLabel('Your API token or one-time login code').fill(token)
    await Promise.all([page.waitForURL(/\/callback/), page.getByRole('button', { name: 'Approve' }).click()])
    const landed = new URL(page.url())
    t.ok(landed.searchParams.get('code')?.startsWith('bus_ac_'))
    t.equal(landed.searchParams.get('state'), 'xyz')
    t.equal(landed.searchParams.get('iss'), server.config.publicUrl)
  })

  t.test('deny returns access_denied to the app', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const app = await callbackServer(t)
    const { url } = await authorizationUrl(server, app.url)
    const page = await browser.newPage()
    t.teardown(() => page.close())
    await page.goto(url)
    await Promise.all([page.waitForURL(/\/callback/), page.getByRole('button', { name: 'Deny' }).click()])
    const landed = new URL(page.url())
    t.equal(landed.searchParams.get('error'), 'access_denied')
    t.equal(landed.searchParams.get('state'), 'xyz')
    t.equal(landed.searchParams.get('code'), null)
  })

  t.test('a wrong token shows an error and lets the person try again', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const token = await principalWithToken(server, 'carol')
    const app = await callbackServer(t)
    const { url } = await authorizationUrl(server, app.url)
    const page = await browser.newPage()
    t.teardown(() => page.close())
    await page.goto(url)
    await page.getByLabel('Your API token or one-time login code').fill('bus_api_wrong')
    await page.getByRole('button', { name: 'Approve' }).click()
    await page.waitForSelector('[role=alert]')
    t.match(await page.locator('[role=alert]').textContent(), /not a valid API token or login code/)
    t.equal(app.received.length, 0, 'nothing reached the app')
    await page.getByLabel('Your API token or one-time login code').fill(token)
    await Promise.all([page.waitForURL(/\/callback/), page.getByRole('button', { name: 'Approve' }).click()])
    t.ok(new URL(page.url()).searchParams.get('code'))
  })

  t.test('replaying the approved form is refused and issues nothing', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const token = await principalWithToken(server, 'dave')
    const app = await callbackServer(t)
    const { url } = await authorizationUrl(server, app.url)
    const page = await browser.newPage()
    t.teardown(() => page.close())
    await page.goto(url)
    const transaction = await page.locator('input[name=transaction]').getAttribute('value') ?? ''
    await page.getByLabel('Your API token or one-time login code').fill(token)
    await Promise.all([page.waitForURL(/\/callback/), page.getByRole('button', { name: 'Approve' }).click()])
    t.equal(app.received.length, 1)
    // The same form again, from the same browser (its cookies included), as a resubmission would.
    const replay = await page.request.post(`${server.baseUrl}/oauth/authorize`, { form: { transaction, action: 'approve', credential: token }, maxRedirects: 0 })
    t.equal(replay.status(), 400)
    t.match(await replay.text(), /already used or has expired/)
    t.equal(app.received.length, 1, 'no second code')
  })

  t.test('the page cannot be framed by another site', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const app = await callbackServer(t)
    const { url } = await authorizationUrl(server, app.url)
    const evil = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }).end(`<iframe id="f" src="${url.replace(/&/g, '&amp;')}"></iframe>`) })
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve))
    t.teardown(() => evil.close())
    const page = await browser.newPage()
    t.teardown(() => page.close())
    await page.goto(`http://127.0.0.1:${(evil.address() as { port: number }).port}/`)
    await page.waitForTimeout(500)
    const frame = page.frames().find((f) => f !== page.mainFrame())
    const framedText = frame === undefined ? '' : await frame.locator('body').innerText().catch(() => '')
    t.notMatch(framedText, /Allow/, 'the consent page did not render inside the frame')
  })
}
