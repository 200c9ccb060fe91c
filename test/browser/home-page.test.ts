import { chromium, type Browser } from 'playwright-core'
import t from 'tap'
import { startTestServer } from '../helpers/server.ts'
import { chromiumBinary, fileNeeds } from '../helpers/requirements.ts'

// .ci/run installs Debian's chromium; elsewhere the file skips with the reason (fails under REQUIRE_FULL_SUITE).
const needed = chromiumBinary()
const CHROMIUM = needed.path
if (fileNeeds(t, [needed])) {
  let browser: Browser
  t.before(async () => { browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }) })
  t.teardown(async () => { await browser?.close() })

  t.test('GET / renders under its own CSP; the copy button copies the /mcp URL', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const context = await browser.newContext({ viewport: { width: 1000, height: 900 } })
    t.teardown(() => context.close())
    // localhost is a secure context, so the clipboard API works once granted.
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.baseUrl })
    const page = await context.newPage()
    const violations: string[] = []
    page.on('console', (message) => { if (/Content Security Policy|Refused/i.test(message.text())) violations.push(message.text()) })
    // (Browser-side code as strings: the project's TypeScript has no DOM types.)
    await page.addInitScript("document.addEventListener('securitypolicyviolation', (e) => console.log('Refused (CSP): ' + e.violatedDirective))")
    const response = await page.goto(`${server.baseUrl}/`)
    t.equal(response?.status(), 200)
    t.equal(await page.title(), 'Bus MCP Server')
    t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Bus MCP Server')
    t.equal(await page.locator('#mcp-url').textContent(), `${server.baseUrl}/mcp`)

    // The stylesheet applied (its hash is in the CSP): main is a centred card, not the default layout.
    const main = await page.evaluate('(({ maxWidth, borderTopStyle }) => ({ maxWidth, border: borderTopStyle }))(getComputedStyle(document.querySelector("main")))')
    t.same(main, { maxWidth: '672px', border: 'solid' }, 'the inline style was allowed')

    // The script ran (its hash is in the CSP): the copy buttons are visible and work.
    const copy = page.locator('button[data-copy="mcp-url"]')
    t.ok(await copy.isVisible(), 'the copy button is shown once the script runs')
    await copy.click()
    // The handler awaits the clipboard: wait for its answer rather than race it.
    await page.waitForFunction('document.querySelector(\'button[data-copy="mcp-url"]\').textContent === "Copied"', undefined, { timeout: 5000 })
    t.pass('the button says Copied')
    t.equal(await page.evaluate('navigator.clipboard.readText()'), `${server.baseUrl}/mcp`, 'the clipboard holds the /mcp URL')
    t.same(violations, [], 'nothing on the page was refused by the CSP')

    // The links go where they say.
    const prm = await page.getByRole('link', { name: 'Protected resource metadata' }).getAttribute('href')
    t.equal(prm, `${server.baseUrl}/.well-known/oauth-protected-resource/mcp`)
    if (process.env.HOME_PAGE_SCREENSHOT !== undefined) await page.screenshot({ path: process.env.HOME_PAGE_SCREENSHOT, fullPage: true })
  })

  t.test('without JavaScript: the URL is there to select, the copy buttons stay hidden', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const context = await browser.newContext({ javaScriptEnabled: false })
    t.teardown(() => context.close())
    const page = await context.newPage()
    await page.goto(`${server.baseUrl}/`)
    t.equal(await page.locator('#mcp-url').textContent(), `${server.baseUrl}/mcp`)
    t.equal(await page.locator('button[data-copy]').first().isVisible(), false, 'no dead button')
    t.equal(await page.evaluate('getComputedStyle(document.getElementById("mcp-url")).userSelect'), 'all', 'one click selects the whole URL')
  })

  t.test('the page refuses to be framed', async (t) => {
    const server = await startTestServer(t, { listen: true })
    const page = await browser.newPage()
    t.teardown(() => page.close())
    // Control: /healthz (JSON, no anti-framing headers) does render in the same frame setup.
    await page.setContent(`<iframe src="${server.baseUrl}/healthz"></iframe><iframe src="${server.baseUrl}/"></iframe>`)
    await page.waitForLoadState('load')
    const textOf = async (path: string): Promise<string> => {
      const frame = page.frames().find((f) => f.url() === `${server.baseUrl}${path}`)
      return frame === undefined ? '' : await frame.evaluate<string>('document.body ? document.body.innerText : ""').catch(() => '')
    }
    t.match(await textOf('/healthz'), /"status":"ok"/, 'control: a frameable response renders')
    t.notMatch(await textOf('/'), /Bus MCP Server/, 'the home page does not render inside a frame')
  })
}
