/**
 * RFC 8707 `resource` values naming this server. The canonical one is `PUBLIC_URL/mcp`; clients
 * also send it with a trailing slash, with an upper-case scheme or host, or as the bare origin
 * (with or without a slash) when they derive it from the origin (client-interop.md §2–§3).
 * Anything else names another resource server and is refused with `invalid_target`.
 */
export function namesThisResource (requested: string, resourceUrl: string): boolean {
  let url: URL
  try {
    url = new URL(requested)
  } catch {
    return false
  }
  if (url.hash !== '' || url.search !== '' || url.username !== '' || url.password !== '') return false
  const canonical = new URL(resourceUrl)
  if (url.origin !== canonical.origin) return false
  const path = url.pathname.replace(/\/+$/, '')
  return path === '' || path === canonical.pathname.replace(/\/+$/, '')
}
