import { isNetworkFailure, type NetworkFailure, type ProbeResponse } from '../probe.ts'

/**
 * The one chain every HTTP check of `bus-mcp doctor` runs an answer through, in this order:
 * no answer at all → a redirect (never followed: claude.ai's discovery does not, and a POST
 * loses its body) → missing (404, and what else the caller counts as "no such endpoint") → not
 * the expected status → not a JSON object. Each check words each outcome for what it asked.
 */
export type Answer =
  | { kind: 'unreachable', failure: NetworkFailure }
  | { kind: 'redirect', response: ProbeResponse, detail: string, fix: string }
  | { kind: 'missing', response: ProbeResponse }
  | { kind: 'unexpected', response: ProbeResponse }
  | { kind: 'not-json', response: ProbeResponse }
  /** `body` is the JSON object answered, or {} when the caller did not require one and got none. */
  | { kind: 'ok', response: ProbeResponse, body: Record<string, unknown> }

export interface Expected {
  /** The request's method, for the redirect advice (default GET). */
  method?: string
  /** The statuses that answer the request. */
  status: number[]
  /** Statuses meaning the endpoint is not there (default none: they count as unexpected). */
  missing?: number[]
  /** Whether the body must be a JSON object (default true). */
  json?: boolean
}

export function classifyAnswer (response: ProbeResponse | NetworkFailure, expected: Expected): Answer {
  if (isNetworkFailure(response)) return { kind: 'unreachable', failure: response }
  const { status } = response
  if (status >= 300 && status < 400) return { kind: 'redirect', response, ...redirectProblem(response, expected.method ?? 'GET') }
  if (expected.missing?.includes(status) === true) return { kind: 'missing', response }
  if (!expected.status.includes(status)) return { kind: 'unexpected', response }
  const body = jsonObject(response)
  if (body === undefined && expected.json !== false) return { kind: 'not-json', response }
  return { kind: 'ok', response, body: body ?? {} }
}

/** The body when it is a JSON object (not an array, null or a scalar). */
export function jsonObject (response: ProbeResponse): Record<string, unknown> | undefined {
  const json = response.json
  return json !== undefined && json !== null && typeof json === 'object' && !Array.isArray(json) ? json as Record<string, unknown> : undefined
}

/** A 3xx answer: where it points, and why following it is not an option. */
export function redirectProblem (response: ProbeResponse, method: string): { detail: string, fix: string } {
  const location = response.headers.get('location') ?? '(no Location)'
  return method === 'GET'
    ? {
        detail: `${response.url} answered ${response.status} redirecting to ${location}`,
        fix: 'serve it at this exact URL: claude.ai\'s discovery does not follow redirects (a trailing-slash or http→https redirect in the proxy, or a wrong PUBLIC_URL)'
      }
    : {
        detail: `${method} ${response.url} answered ${response.status} redirecting to ${location}`,
        fix: 'no redirects on POST: clients lose the body or turn it into a GET; route this exact path to the service (no trailing-slash or http→https redirect in front)'
      }
}
