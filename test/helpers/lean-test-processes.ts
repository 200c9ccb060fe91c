/**
 * Imported into every test file's process (tap's `node-arg`): turns off two things tap adds for
 * coverage and `tap --changed`, which this suite does not use (`disable-coverage`), and which
 * cost CPU in every process (docs/decisions/0035-test-processes-without-tap-tracking.md):
 *
 * - `--enable-source-maps`: with it, tap's process tracker (@tapjs/processinfo) looks up the
 *   source map of every module that names one, so Node parses the maps of half of node_modules.
 *   Our own .ts files need none: type stripping keeps their lines and columns.
 * - The tracker in the processes tests start: it puts itself into the NODE_OPTIONS of every child
 *   (servers, CLI commands, Inspector, nested tap runs), where it re-reads each loaded module and
 *   writes a record at exit. The listener below runs after the tracker's and takes it out again;
 *   the test file itself stays tracked, as tap needs.
 */
import module from 'node:module'
import processOnSpawn from 'process-on-spawn'
import { withoutTracker } from './tap-tracker.ts'

module.setSourceMapsSupport(false)

processOnSpawn.addListener((child) => {
  child.env = withoutTracker(child.env)
})
