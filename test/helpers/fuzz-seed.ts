/**
 * The seed of a property-based test: new on every run, so repeated runs explore new inputs;
 * `FUZZ_SEED=<n>` replays a run (its seed is printed, and repeated in every failure message).
 * Each property of a file derives its own seed from the run's one and the property's name.
 */
export const FUZZ_SEED: number = (() => {
  const given = process.env.FUZZ_SEED
  if (given === undefined || given === '') return Math.floor(Math.random() * 0x7fffffff)
  const seed = Number(given)
  if (!Number.isSafeInteger(seed)) throw new Error(`FUZZ_SEED=${given} is not an integer`)
  return seed
})()

export function seedFor (property: string): number {
  let hash = FUZZ_SEED | 0
  for (const char of property) hash = (Math.imul(hash, 31) + (char.codePointAt(0) ?? 0)) | 0
  return hash
}

/** The line to print with a property's result: how to replay it. */
export function replayHint (property: string): string {
  return `seed ${seedFor(property)} (replay the run with FUZZ_SEED=${FUZZ_SEED})`
}
