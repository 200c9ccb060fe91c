import type { FastifyReply } from 'fastify'
import type { Scope } from '../auth/scopes.ts'

const SCOPE_TEXT: Record<Scope, string> = {
  'bus:read': 'Read messages, channels and who is on the bus',
  'bus:write': 'Send messages and acknowledge what it has read'
}

export function escapeHtml (value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c)
}

const STYLE = `
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1b}
main{max-width:32rem;margin:3rem auto;padding:2rem;background:#fff;border:1px solid #ddd;border-radius:8px}
h1{font-size:1.4rem;margin-top:0}
.host{font-family:ui-monospace,monospace;background:#f0f0ec;padding:0 .25rem;border-radius:3px}
.warn{background:#fff6db;border:1px solid #e6cf7a;padding:.5rem .75rem;border-radius:4px}
.error{background:#fde8e8;border:1px solid #e39b9b;padding:.5rem .75rem;border-radius:4px}
label{display:block;font-weight:600;margin-top:1rem}
input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;margin-top:.25rem}
.hint{font-size:.9rem;color:#555;margin:.25rem 0 0}
.actions{display:flex;gap:.75rem;margin-top:1.5rem}
button{font:inherit;padding:.5rem 1.25rem;border-radius:4px;border:1px solid #888;background:#fff;cursor:pointer}
button.primary{background:#1d4ed8;border-color:#1d4ed8;color:#fff}
a.button{display:block;text-align:center;text-decoration:none;font-weight:600;padding:.6rem 1.25rem;border-radius:4px;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;margin-top:.75rem}
pre{background:#f0f0ec;padding:.5rem .75rem;border-radius:4px;white-space:pre-wrap;word-break:break-all}
.or{text-align:center;color:#555;margin:1.5rem 0 0}
.signed-in{background:#e8f3ea;border:1px solid #8fc79a;padding:.5rem .75rem;border-radius:4px}
button:focus-visible,input:focus-visible,a:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}`

function page (title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>${escapeHtml(title)} · Bus MCP Server</title><style>${STYLE}</style></head>
<body><main>${body}</main></body></html>`
}

/**
 * Headers of every page the authorization endpoint renders: never cached, never framed
 * (clickjacking), no scripts, and forms may only post here or navigate to the client's redirect.
 */
export function setPageHeaders (reply: FastifyReply, redirectTarget?: string): FastifyReply {
  const formAction = ["'self'", ...(redirectTarget !== undefined ? [redirectTarget] : [])].join(' ')
  return reply
    .header('Content-Type', 'text/html; charset=utf-8')
    .header('Cache-Control', 'no-store')
    .header('Pragma', 'no-cache')
    .header('X-Frame-Options', 'DENY')
    .header('Content-Security-Policy', `default-src 'none'; style-src 'unsafe-inline'; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`)
    .header('Referrer-Policy', 'no-referrer')
    .header('X-Content-Type-Options', 'nosniff')
}

/** The CSP source allowing the form's final redirect: the origin for http(s), the scheme for apps. */
export function formActionSource (redirectUri: string): string {
  const url = new URL(redirectUri)
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : url.protocol
}

/**
 * An authorization request that fails on a page, never redirected: the client or its redirect URI
 * could not be verified, or the consent or sign-in cannot go on (the authorize plugin's error
 * handler renders it with the page headers).
 */
export class AuthorizePageError extends Error {
  readonly title: string
  readonly statusCode: number

  constructor (title: string, message: string, statusCode = 400) {
    super(message)
    this.title = title
    this.statusCode = statusCode
  }
}

/** A "Sign in with LABEL" link: GET, so the CSP's form-action does not stop its redirect to the provider. */
export interface SignInLink {
  label: string
  href: string
}

export interface ConsentView {
  action: string
  transaction: string
  clientName: string
  clientId: string
  redirectHost: string
  loopbackOnly: boolean
  scopes: Scope[]
  error?: string | undefined
  /** One per identity provider with `login`. */
  signIn?: SignInLink[]
  /** Set after a sign-in at a provider: approve or deny only, no credential. */
  signedIn?: { principal: string, provider: string } | undefined
  /** A command for the server's operator, shown under the error (an unlinked identity). */
  command?: string | undefined
}

export function renderConsentPage (view: ConsentView): string {
  const scopes = view.scopes.map((s) => `<li><strong>${escapeHtml(s)}</strong>: ${escapeHtml(SCOPE_TEXT[s])}</li>`).join('')
  return page('Authorize access', `
<h1>Allow <span id="client-name">${escapeHtml(view.clientName)}</span> to use the bus?</h1>
<p>It will act as ${view.signedIn !== undefined ? escapeHtml(view.signedIn.principal) : 'the principal you prove below'}, and send you back to <span class="host" id="redirect-host">${escapeHtml(view.redirectHost)}</span>.</p>
${view.loopbackOnly ? '<p class="warn" role="note">This application runs on your own computer (it redirects to a local address). Approve only if you started it.</p>' : ''}
<p id="client-id" class="hint">Client ID: ${escapeHtml(view.clientId)}</p>
<h2 id="scopes-heading">It asks to</h2>
<ul aria-labelledby="scopes-heading">${scopes}</ul>
${view.error !== undefined ? `<p class="error" role="alert" id="error">${escapeHtml(view.error)}</p>` : ''}
${view.command !== undefined ? `<pre id="command"><code>${escapeHtml(view.command)}</code></pre>` : ''}
${view.signedIn !== undefined ? signedInForm(view, view.signedIn) : credentialForm(view)}`)
}

function signedInForm (view: ConsentView, signedIn: { principal: string, provider: string }): string {
  return `<p class="signed-in" id="signed-in">Signed in as <strong id="principal">${escapeHtml(signedIn.principal)}</strong> via ${escapeHtml(signedIn.provider)}. Approving lets the application act as ${escapeHtml(signedIn.principal)}.</p>
<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="transaction" value="${escapeHtml(view.transaction)}">
<div class="actions">
<button type="submit" name="action" value="approve" class="primary">Approve</button>
<button type="submit" name="action" value="deny">Deny</button>
</div>
</form>`
}

function credentialForm (view: ConsentView): string {
  const links = view.signIn ?? []
  const signIn = links.length === 0
    ? ''
    : `<nav aria-label="Sign in">${links.map((l) => `<a class="button" href="${escapeHtml(l.href)}">Sign in with ${escapeHtml(l.label)}</a>`).join('')}</nav>
<p class="or">or prove the principal yourself</p>`
  return `${signIn}
<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="transaction" value="${escapeHtml(view.transaction)}">
<label for="credential">Your API token or one-time login code</label>
<input type="password" id="credential" name="credential" autocomplete="off" spellcheck="false" aria-describedby="credential-hint" required>
<p class="hint" id="credential-hint">Get a code with <code>npx bus-mcp login-code YOUR_NAME</code>; it works once, for 10 minutes.</p>
<div class="actions">
<button type="submit" name="action" value="approve" class="primary">Approve</button>
<button type="submit" name="action" value="deny" formnovalidate>Deny</button>
</div>
</form>`
}

/** Errors that must not redirect (unknown client, unregistered redirect URI, spent consent). */
export function renderErrorPage (title: string, message: string): string {
  return page(title, `<h1>${escapeHtml(title)}</h1><p role="alert" id="error">${escapeHtml(message)}</p><p>You can close this window and start the connection again from your application.</p>`)
}
