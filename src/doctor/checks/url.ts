import { isLoopbackHost } from '../../lib/loopback.ts'
import { fail, pass, warn, type CheckResult } from '../result.ts'
import { quoteValue } from './common.ts'

// 1. The URL given: what is checked, and whether claude.ai could reach it.

export interface UrlCheck { result: CheckResult, mcpUrl: URL | undefined }

export function checkUrl (input: string): UrlCheck {
  const name = 'url'
  let url: URL
  try {
    url = new URL(input.trim())
  } catch {
    return { result: fail(name, `${quoteValue(input)} is not a URL`, 'give the MCP endpoint as claude.ai gets it, e.g. https://bus.example.com/mcp'), mcpUrl: undefined }
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { result: fail(name, `${url.protocol} is not http(s)`, 'give the MCP endpoint, e.g. https://bus.example.com/mcp'), mcpUrl: undefined }
  }
  url.hash = ''
  let assumed = ''
  // A trailing slash (…/mcp/) names another resource than PUBLIC_URL/mcp, and clients compare
  // the strings: check the endpoint without it, and tell the user to give that one to clients.
  let slashless: string | undefined
  if (/^\/*$/.test(url.pathname)) {
    url.pathname = '/mcp'
    assumed = ' (no path given: assuming /mcp; give the full endpoint to claude.ai)'
  } else if (url.pathname.endsWith('/')) {
    const given = url.href
    url.pathname = url.pathname.replace(/\/+$/, '')
    slashless = url.href
    assumed = ` (not ${given}: the trailing slash is dropped)`
  }
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port)
  const loopback = isLoopbackHost(url.hostname)
  let result: CheckResult
  if (url.protocol === 'http:') {
    result = loopback
      ? warn(name, `checking ${url.href}${assumed}: plain http on a loopback host, fine for local testing`, 'claude.ai needs a public https URL on port 443 (put Caddy in front and set PUBLIC_URL=https://your.host)')
      : fail(name, `checking ${url.href}${assumed}: plain http on a non-loopback host`, 'claude.ai and the MCP authorization spec require https: put Caddy in front (README, production) and set PUBLIC_URL=https://your.host')
  } else if (loopback) {
    result = warn(name, `checking ${url.href}${assumed}: https on a loopback host`, 'claude.ai connects from Anthropic\'s cloud: the host must be public (DNS, port 443 open)')
  } else if (port !== 443) {
    result = warn(name, `checking ${url.href}${assumed}: https on port ${port}`, 'claude.ai connects only to port 443; serve the MCP endpoint there')
  } else {
    result = pass(name, `checking ${url.href}${assumed}: https`)
  }
  if (slashless !== undefined && result.status !== 'fail') {
    const fix = `give claude.ai (and every client) ${slashless}, without the trailing slash: the protected resource is PUBLIC_URL/mcp, and clients compare it with the URL they were given byte for byte`
    result = warn(name, result.detail, result.fix === null ? fix : `${fix}; also: ${result.fix}`)
  } else if (slashless !== undefined && result.fix !== null) {
    result = fail(name, result.detail, `${result.fix}, and give clients the URL without the trailing slash (https://your.host/mcp)`)
  }
  return { result, mcpUrl: url }
}
