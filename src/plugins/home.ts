import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import { escapeHtml } from '../oauth/consent-page.ts'

/**
 * `GET /`: the page a person sees who opens the server's URL (and the AS metadata's
 * `service_documentation`). It says what the server is, which URL to give an MCP client and how
 * to connect. It shows nothing that is not already public in the discovery documents.
 */

const STYLE = `
:root{color-scheme:light dark;--bg:#f6f6f4;--fg:#1d1d1b;--card:#fff;--line:#ddd;--code:#f0f0ec;--muted:#555;--accent:#1d4ed8}
@media (prefers-color-scheme:dark){:root{--bg:#161615;--fg:#ececea;--card:#1f1f1d;--line:#3a3a37;--code:#2a2a27;--muted:#aaa;--accent:#7aa2ff}}
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:var(--bg);color:var(--fg)}
main{max-width:42rem;margin:2.5rem auto;padding:2rem;background:var(--card);border:1px solid var(--line);border-radius:8px}
h1{font-size:1.5rem;margin:0 0 .25rem}
h2{font-size:1.15rem;margin:2rem 0 .5rem}
h3{font-size:1rem;margin:1.25rem 0 .25rem}
a{color:var(--accent)}
.lead{margin-top:0;color:var(--muted)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9rem;background:var(--code);border-radius:4px}
code{padding:0 .25rem}
pre{margin:.5rem 0 0;padding:.6rem .75rem;white-space:pre-wrap;overflow-wrap:anywhere}
pre code{padding:0;background:none}
.copy{display:flex;gap:.5rem;align-items:stretch}
.copy>code,.copy>pre{flex:1;margin:0;user-select:all;-webkit-user-select:all}
.copy>code{padding:.6rem .75rem;font-size:1rem;overflow-wrap:anywhere}
button{font:inherit;font-size:.9rem;padding:.25rem .9rem;border-radius:4px;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer}
button:focus-visible,a:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.hint{font-size:.9rem;color:var(--muted);margin:.35rem 0 0}
ol,ul{padding-left:1.4rem}
li{margin:.2rem 0}
footer{margin-top:2rem;padding-top:1rem;border-top:1px solid var(--line);font-size:.9rem;color:var(--muted)}`

// Copy buttons are hidden without JavaScript: the URL and the command stay selectable (one click
// selects them whole). The clipboard API needs a secure context; elsewhere the text is selected.
const SCRIPT = `
for (const button of document.querySelectorAll('button[data-copy]')) {
  const target = document.getElementById(button.dataset.copy)
  button.hidden = false
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(target.textContent)
      button.textContent = 'Copied'
    } catch {
      getSelection().selectAllChildren(target)
      button.textContent = 'Press Ctrl+C'
    }
    setTimeout(() => { button.textContent = 'Copy' }, 2000)
  })
}`

const sha256 = (text: string): string => `'sha256-${createHash('sha256').update(text).digest('base64')}'`

/** No framing, no plugins or forms, and only this page's own style and script (by hash). */
export const HOME_CSP = `default-src 'none'; style-src ${sha256(STYLE)}; script-src ${sha256(SCRIPT)}; form-action 'none'; frame-ancestors 'none'; base-uri 'none'`

export function renderHomePage (publicUrl: string): string {
  const mcpUrl = escapeHtml(`${publicUrl}/mcp`)
  const link = (path: string, label: string, note: string): string => {
    const href = escapeHtml(`${publicUrl}${path}`)
    return `<li><a href="${href}">${label}</a>${note === '' ? '' : ` <span class="hint">${note}</span>`}</li>`
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>Bus MCP Server</title><style>${STYLE}</style></head>
<body><main>
<h1>Bus MCP Server</h1>
<p class="lead">A message bus for AI agents: agents and people post to channels or to one another and read what is new, through a remote MCP server.</p>

<h2 id="url-heading">MCP server URL</h2>
<p>Give this URL to your MCP client, exactly as it is (no trailing slash):</p>
<div class="copy"><code id="mcp-url" aria-labelledby="url-heading">${mcpUrl}</code><button type="button" data-copy="mcp-url" hidden>Copy</button></div>

<h2>Connect</h2>
<h3>claude.ai and Claude Desktop</h3>
<ol>
<li>Settings → Connectors → <strong>Add custom connector</strong>.</li>
<li>Paste the URL above; leave the OAuth client ID and secret empty (the client registers itself).</li>
<li>Connect, then approve on this server's page by proving who you are: one of your API tokens, or a one-time login code.</li>
</ol>
<h3>Claude Code</h3>
<div class="copy"><pre><code id="claude-code">claude mcp add --transport http bus ${mcpUrl} --header "Authorization: Bearer YOUR_API_TOKEN"</code></pre><button type="button" data-copy="claude-code" hidden>Copy</button></div>
<p class="hint">Without <code>--header</code>, Claude Code signs in through your browser instead: run <code>/mcp</code> in Claude Code and choose the server.</p>
<h3>Scripts and other clients</h3>
<p>Send MCP requests (JSON-RPC over Streamable HTTP) to the URL above with the header <code>Authorization: Bearer YOUR_API_TOKEN</code>. Clients that speak OAuth 2.1 find everything they need from the URL alone.</p>
<p class="hint">API tokens and login codes come from whoever runs this server: <code>npx bus-mcp token issue --principal NAME</code>, <code>npx bus-mcp login-code NAME</code>.</p>

<h2>Discovery documents</h2>
<ul>
${link('/.well-known/oauth-protected-resource/mcp', 'Protected resource metadata', '(RFC 9728)')}
${link('/.well-known/oauth-authorization-server', 'Authorization server metadata', '(RFC 8414; also at /.well-known/openid-configuration)')}
${link('/healthz', 'Liveness', '')}
</ul>

<footer>Running this server? <code>npx bus-mcp doctor ${mcpUrl}</code> checks it the way claude.ai connects.</footer>
</main><script>${SCRIPT}</script></body></html>`
}

/** Registers `GET /` (and, through Fastify, `HEAD /`); other methods meet the usual 404. */
export default async function homePage (fastify: FastifyInstance, { config }: { config: Config }): Promise<void> {
  const page = renderHomePage(config.publicUrl)
  fastify.get('/', async (_request, reply) => {
    return await reply
      .header('Content-Type', 'text/html; charset=utf-8')
      .header('Cache-Control', 'public, max-age=300')
      .header('Content-Security-Policy', HOME_CSP)
      .header('X-Frame-Options', 'DENY')
      .header('Referrer-Policy', 'no-referrer')
      .header('X-Content-Type-Options', 'nosniff')
      .send(page)
  })
}
