import { createHash } from 'node:crypto'
import t from 'tap'
import { renderHomePage } from '../../src/plugins/home.ts'
import { startTestServer } from '../helpers/server.ts'

/** The sha256 CSP sources of the page's inline <style> and <script>, as a browser computes them. */
function inlineHashes (html: string, tag: 'style' | 'script'): string[] {
  return [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))]
    .map((m) => `'sha256-${createHash('sha256').update(m[1] ?? '').digest('base64')}'`)
}

t.test('GET / is a small HTML page: what this is, the /mcp URL, how to connect, the discovery documents', async (t) => {
  const server = await startTestServer(t, { env: { PUBLIC_URL: 'https://bus.example.com' } })
  const response = await server.app.inject({ method: 'GET', url: '/' })
  t.equal(response.statusCode, 200)
  t.equal(response.headers['content-type'], 'text/html; charset=utf-8')
  const html = response.body
  t.match(html, /^<!doctype html>/)
  t.match(html, '<h1>Bus MCP Server</h1>')
  t.match(html, '<code id="mcp-url" aria-labelledby="url-heading">https://bus.example.com/mcp</code>', 'the URL to paste is PUBLIC_URL/mcp, shown as text')
  t.match(html, 'claude mcp add --transport http bus https://bus.example.com/mcp --header "Authorization: Bearer YOUR_API_TOKEN"')
  t.match(html, 'Add custom connector')
  t.match(html, '<code>Authorization: Bearer YOUR_API_TOKEN</code>')
  for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-authorization-server', '/healthz']) {
    t.match(html, `href="https://bus.example.com${path}"`, `links to ${path}`)
  }
  t.match(html, /<button type="button" data-copy="mcp-url" hidden>Copy<\/button>/, 'the copy button is hidden until the script shows it')
  t.notMatch(html, /bus_[a-z]+_[A-Za-z0-9_-]{16}/, 'no token in the page')
})

t.test('GET /: headers against framing, scripts from elsewhere, sniffing and referrers', async (t) => {
  const server = await startTestServer(t)
  const response = await server.app.inject({ method: 'GET', url: '/' })
  t.equal(response.headers['x-frame-options'], 'DENY')
  t.equal(response.headers['x-content-type-options'], 'nosniff')
  t.equal(response.headers['referrer-policy'], 'no-referrer')
  t.equal(response.headers['cache-control'], 'public, max-age=300')
  const csp = String(response.headers['content-security-policy'])
  const directives = new Map(csp.split(/;\s*/).map((d) => { const [name = '', ...values] = d.split(' '); return [name, values] }))
  t.same(directives.get('default-src'), ["'none'"])
  t.same(directives.get('frame-ancestors'), ["'none'"])
  t.same(directives.get('base-uri'), ["'none'"])
  t.same(directives.get('form-action'), ["'none'"])
  t.same(directives.get('script-src'), inlineHashes(response.body, 'script'), 'script-src allows exactly the inline script, by hash')
  t.same(directives.get('style-src'), inlineHashes(response.body, 'style'), 'style-src allows exactly the inline style, by hash')
  t.notMatch(csp, /unsafe-inline|unsafe-eval/)
})

t.test('HEAD / answers like GET without a body; other methods get the usual 404', async (t) => {
  const server = await startTestServer(t)
  const get = await server.app.inject({ method: 'GET', url: '/' })
  const head = await server.app.inject({ method: 'HEAD', url: '/' })
  t.equal(head.statusCode, 200)
  t.equal(head.body, '')
  t.equal(head.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(head.headers['content-security-policy'], get.headers['content-security-policy'])
  t.equal(head.headers['x-frame-options'], 'DENY')
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH'] as const) {
    const response = await server.app.inject({ method, url: '/', payload: {} })
    const healthz = await server.app.inject({ method, url: '/healthz', payload: {} })
    t.equal(response.statusCode, 404, `${method} /`)
    t.equal(healthz.statusCode, 404, `${method} /healthz, for comparison`)
    t.same(response.json(), { error: 'not_found', message: `${method} / is not a route of this server` })
  }
  const query = await server.app.inject({ method: 'GET', url: '/?code=x' })
  t.equal(query.statusCode, 200, 'a query string does not matter')
})

t.test('the AS metadata\'s service_documentation points at this page, and it answers', async (t) => {
  const server = await startTestServer(t)
  const metadata = (await server.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server' })).json() as { service_documentation: string }
  t.equal(metadata.service_documentation, `${server.config.publicUrl}/`)
  const page = await server.app.inject({ method: 'GET', url: new URL(metadata.service_documentation).pathname })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
})

t.test('PUBLIC_URL is escaped wherever it appears (the config only admits origins; the renderer does not rely on it)', async (t) => {
  const html = renderHomePage('https://x.example"><script>alert(1)</script>&\'')
  t.notMatch(html, '<script>alert(1)</script>')
  t.notMatch(html, /href="https:\/\/x\.example">/)
  t.match(html, 'https://x.example&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#39;/mcp')
  t.equal(html.match(/<script>/g)?.length, 1, 'one script element: the page\'s own')
})
