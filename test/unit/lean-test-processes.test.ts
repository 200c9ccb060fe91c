import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { isTracked, withoutTracker } from '../helpers/tap-tracker.ts'

// tap starts each test file with test/helpers/lean-test-processes.ts (package.json, tap.node-arg),
// which this file does not import: decision 0035.

const TRACKER_IMPORT = '--import=file:///repo/node_modules/@tapjs/processinfo/dist/esm/import.mjs'

t.test('withoutTracker takes out the tracker and keeps everything else', async (t) => {
  t.same(withoutTracker({ PATH: '/bin', NODE_OPTIONS: `"${TRACKER_IMPORT}"`, _TAPJS_PROCESSINFO_ROOT_: 'x', _TAPJS_PROCESSINFO_EXCLUDE_: '/y/' }), { PATH: '/bin' },
    'only the tracker in NODE_OPTIONS: no NODE_OPTIONS at all')
  t.same(withoutTracker({ NODE_OPTIONS: `--max-old-space-size=300 ${TRACKER_IMPORT} "--title=a b"`, TAP: '1' }),
    { NODE_OPTIONS: '--max-old-space-size=300 "--title=a b"', TAP: '1' }, 'other options, quoted ones too, and tap\'s own variables stay')
  t.same(withoutTracker({ PATH: '/bin' }), { PATH: '/bin' })
})

t.test('in a test file: no source maps, and a child starts without the tracker', async (t) => {
  t.ok(isTracked(), 'tap tracks the test file itself (left as it is)')
  t.equal(process.sourceMapsEnabled, false, 'source maps are off although tap passed --enable-source-maps')
  const { stdout } = await promisify(execFile)(process.execPath, ['-p', 'JSON.stringify(process.env)'], {
    env: { PATH: process.env.PATH, NODE_OPTIONS: '--max-old-space-size=300' }
  })
  const env = JSON.parse(stdout) as Record<string, string>
  t.match(env.NODE_OPTIONS, /^"?--max-old-space-size=300"?$/, 'the child\'s own NODE_OPTIONS, without the tracker')
  t.same(Object.keys(env).filter((name) => name.startsWith('_TAPJS_PROCESSINFO_')), [], 'nor its variables')
})
