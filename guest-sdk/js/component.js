/**
 * The component side of the SDK: adapts a {@link Model} subclass to the `ferry:model` world's
 * `model` export as the QuickJS bindings (componentize-qjs, through jco) see it. `ferry build`
 * generates the entry module that calls {@link component}; model authors never import this.
 *
 * What the bindings hand over and take back (checked against them, jco 1.35 with `--backend qjs`):
 * records are objects with camelCase keys; enums are their case names (`'fp32'`); a variant is
 * `{tag, val}`; `option` is the value or `null`; `list<u8>` arrives as a `Uint8Array`, `list<s8>` as
 * an `Int8Array` and `list<list<u8>>` as an array of `Uint8Array`, other lists as arrays (typed arrays
 * are accepted back); 64-bit integers are numbers, not BigInt; a `u32` at or above 2^31 (and a `u64`
 * within 2^31 of 2^64) arrives negative, read as signed. A function whose result is
 * `result<T, model-error>` returns `T` or throws the `model-error` value. Lowering does not check
 * numbers: 2^31 sent as an `s32` saturates, 1.5 truncates, 256 as a `u8` wraps, a `u32` of 2^31 or
 * more saturates unless sent as its signed twin, and a BigInt or a string traps the call. So every
 * output element is checked here, where the message can name the tensor.
 *
 * @module ferry-sdk/component
 */
import { log as hostLog } from 'ferry:model/log@0.1.0';
import {
  Inputs, Metadata, Model, Request, SelfTests, Tensor, TensorSpec, _describe, log, utf8Encode,
} from './index.js';

// Capped well below the host's per-call log limit (64 KiB by default): a call that passes it traps,
// and the trap would hide the message.
const TRACE_BYTES = 4096;
const MESSAGE_BYTES = 4096;

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);

function hostSink(level, message) {
  hostLog(LEVELS.has(level) ? level : 'info', message);
}

// QuickJS has no `console`; packages (and habits) call it, so it writes to the host's log instead of
// throwing a ReferenceError from inside a request.
function installConsole() {
  if (typeof globalThis.console !== 'undefined') return;
  const text = (args) => args
    .map((a) => (typeof a === 'string' ? a : a instanceof Error ? `${a.name}: ${a.message}` : safeJson(a)))
    .join(' ');
  const at = (level) => (...args) => hostSink(level, text(args));
  globalThis.console = {
    log: at('info'), info: at('info'), debug: at('debug'), trace: at('trace'), warn: at('warn'),
    error: at('error'),
  };
}

function safeJson(value) {
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s;
  } catch {
    return String(value);
  }
}

/** The longest start of `text` that is at most `max` bytes of UTF-8, cut between characters. */
function headBytes(text, max) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    const n = c < 0x80 ? 1 : c < 0x800 ? 2 : pair ? 4 : 3;
    if (bytes + n > max) return text.slice(0, i);
    bytes += n;
    if (pair) i++;
  }
  return text;
}

// ----------------------------------------------------------------------------------------- errors

const KINDS = new Set(['invalid-input', 'unsupported', 'internal']);

/**
 * The model returned something the contract cannot carry (NaN in JSON, 300 in a UINT8 tensor): an
 * internal error whose message says what, without a location (the stack would point into this file).
 */
class Refused extends Error {}

// An error that says what the caller did wrong: an InvalidInput or Unsupported, known by its `payload`
// rather than its class so that one from a second copy of the SDK (say, bundled by a dependency) counts.
function typedPayload(error) {
  const p = error !== null && typeof error === 'object' ? error.payload : undefined;
  if (p && (p.tag === 'invalid-input' || p.tag === 'unsupported') && typeof p.val === 'string') {
    return { tag: p.tag, val: headBytes(p.val, MESSAGE_BYTES) };
  }
  return null;
}

/**
 * Where an error was thrown, as `file:line:col`: the innermost frame of its stack in the model's own
 * code (QuickJS writes frames as `at fn (/model.js:12:5)`, paths from the project folder), else
 * nothing: a frame inside the SDK says nothing the message does not.
 */
function origin(error) {
  const stack = error instanceof Error && typeof error.stack === 'string' ? error.stack : '';
  const frames = [];
  for (const line of stack.split('\n')) {
    const m = /^at\b.*?\(?([^\s()]+:\d+(?::\d+)?)\)?$/.exec(line.trim());
    if (m) frames.push(m[1].replace(/^\//, ''));
  }
  return frames.find((f) => !f.includes('node_modules/ferry-sdk/')) ?? '';
}

/**
 * What a call fails with: the error's own `model-error` for InvalidInput (422) and Unsupported (400);
 * anything else is internal (500) with the exception and where it was thrown, and its stack in the
 * host's log.
 */
function failure(call, error) {
  if (isWitError(error)) return error;
  const typed = typedPayload(error);
  if (typed) return typed;
  if (error instanceof Refused) {
    log.error(headBytes(error.message, TRACE_BYTES));
    return { tag: 'internal', val: headBytes(error.message, MESSAGE_BYTES) };
  }
  let what;
  if (error instanceof Error) {
    what = `${error.name || 'Error'}: ${error.message}`;
  } else if (error !== null && typeof error === 'object') {
    what = `${_describe(error)} (not an Error): ${safeJson(error)}`;
  } else {
    what = `${typeof error === 'string' ? JSON.stringify(error) : _describe(error)} (not an Error)`;
  }
  const where = origin(error);
  const message = `${call} threw ${what}${where ? ` (at ${where})` : ''}`;
  const stack = error instanceof Error && typeof error.stack === 'string' ? error.stack : '';
  log.error(headBytes(`${message}\n${stack}`, TRACE_BYTES));
  return { tag: 'internal', val: headBytes(message, MESSAGE_BYTES) };
}

// Errors this module already built (`the model was called before init`) pass through unchanged.
const witErrors = new WeakSet();

function witError(tag, val) {
  const e = { tag, val };
  witErrors.add(e);
  return e;
}

function isWitError(e) {
  return e !== null && typeof e === 'object' && witErrors.has(e) && KINDS.has(e.tag);
}

function guarded(call, body) {
  try {
    return body();
  } catch (error) {
    let answer;
    try {
      answer = failure(call, error);
    } catch {
      // A thrown value whose getters throw too (a Proxy, a hostile `payload`): still an answer, never
      // a trap that would cost the instance.
      answer = { tag: 'internal', val: `${call} threw a value that could not be described` };
    }
    throw answer;
  }
}

/** `value`, unless it is a Promise (an `async` method), which nothing here could ever settle. */
function settled(call, value) {
  if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
    throw witError(
      'internal',
      `${call} returned a Promise: a model's methods are synchronous in a component (there is no ` +
        'event loop to settle it); drop `async` and return the value',
    );
  }
  return value;
}

// ----------------------------------------------------------------------------------------- tensors

const TAGS = {
  BOOL: 'bool', UINT8: 'uint8', UINT16: 'uint16', UINT32: 'uint32', UINT64: 'uint64',
  INT8: 'int8', INT16: 'int16', INT32: 'int32', INT64: 'int64', FP32: 'fp32', FP64: 'fp64', BYTES: 'bytes',
};
const DATATYPE_OF = Object.fromEntries(Object.entries(TAGS).map(([d, t]) => [t, d]));
const TWO_32 = 4294967296;
const TWO_64 = 18446744073709551616; // 2^64, exact as a double
const TWO_63 = 9223372036854775808;
// [lowest, highest]; the 64-bit bounds are the largest doubles below 2^64 and 2^63.
const INT_RANGES = {
  UINT8: [0, 255], UINT16: [0, 65535], UINT32: [0, 4294967295], UINT64: [0, TWO_64 - 2048],
  INT8: [-128, 127], INT16: [-32768, 32767], INT32: [-2147483648, 2147483647], INT64: [-TWO_63, TWO_63 - 1024],
};

function tensorIn(t) {
  const datatype = DATATYPE_OF[t.data.tag];
  let data = t.data.val;
  if (datatype === 'UINT32' || datatype === 'UINT64') {
    // The bindings hand a large unsigned value over as the signed one with the same bits.
    const wrap = datatype === 'UINT32' ? TWO_32 : TWO_64;
    data = Array.from(data, (x) => (x < 0 ? x + wrap : x));
  } else if (datatype !== 'BYTES' && !Array.isArray(data)) {
    data = Array.from(data); // Uint8Array / Int8Array: one array type for every numeric tensor
  }
  return new Tensor(t.name, datatype, Array.from(t.shape, Number), data);
}

function integer(x) {
  if (typeof x === 'boolean') return x ? 1 : 0;
  if (typeof x === 'bigint') {
    const n = Number(x);
    if (BigInt(n) !== x) throw new RangeError(`${x}n has no exact JavaScript number (past 2^53)`);
    return n;
  }
  if (typeof x !== 'number') throw new TypeError(`${_describe(x)} is not an integer`);
  if (!Number.isInteger(x)) throw new TypeError(`${x} is not an integer (the SDK does not round)`);
  return x;
}

function bytesOf(x) {
  if (typeof x === 'string') return utf8Encode(x);
  if (x instanceof Uint8Array) return x;
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  throw new TypeError(`${_describe(x)} is not a string or bytes (Uint8Array)`);
}

function elements(t, dt) {
  const data = t.data;
  if (dt in INT_RANGES) {
    const [lo, hi] = INT_RANGES[dt];
    const n = data.length;
    const out = dt === 'UINT8' ? new Uint8Array(n) : dt === 'INT8' ? new Int8Array(n) : new Array(n);
    for (let i = 0; i < data.length; i++) {
      const x = integer(data[i]);
      if (!(x >= lo && x <= hi)) throw new RangeError(`${x} does not fit ${dt}`);
      // The bindings lower a u32 through a signed 32-bit number (2^31 and up would saturate): send
      // those as the signed value with the same bits.
      out[i] = dt === 'UINT32' && x > 2147483647 ? x - TWO_32 : x;
    }
    return out;
  }
  if (dt === 'FP32' || dt === 'FP64') {
    const out = new Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const x = data[i];
      if (typeof x !== 'number') throw new TypeError(`${_describe(x)} is not a number`);
      out[i] = x;
    }
    return out;
  }
  if (dt === 'BOOL') {
    return Array.from(data, (x) => {
      if (typeof x === 'boolean') return x;
      if (x === 0 || x === 1) return x === 1;
      throw new TypeError(`${_describe(x)} is not true or false`);
    });
  }
  return Array.from(data, bytesOf);
}

function tensorOut(t, what) {
  if (t === null || typeof t !== 'object') {
    throw new Refused(`${what} ${_describe(t)} where a Tensor belongs`);
  }
  // Built again even from a Tensor, whose fields may have changed since: the constructor checks the
  // datatype, the shape and the element count (and takes a plain {name, datatype, shape, data} too).
  let checked;
  let data;
  try {
    checked = new Tensor(t.name, t.datatype, t.shape, t.data);
  } catch (e) {
    throw new Refused(`${what} a tensor the contract cannot carry: ${e.message}`);
  }
  try {
    data = elements(checked, checked.datatype);
  } catch (e) {
    throw new Refused(`${what} tensor ${JSON.stringify(checked.name)}: ${e.message}`);
  }
  return { name: checked.name, shape: checked.shape, data: { tag: TAGS[checked.datatype], val: data } };
}

function tensorsOut(value, what) {
  if (value === null || typeof value !== 'object' || typeof value[Symbol.iterator] !== 'function') {
    throw new Refused(`${what} ${_describe(value)}, not an array of Tensor`);
  }
  return Array.from(value, (t) => tensorOut(t, what));
}

function spec(s) {
  const checked = new TensorSpec(s.name, s.datatype, s.shape);
  return { name: checked.name, datatype: TAGS[checked.datatype], shape: checked.shape };
}

// -------------------------------------------------------------------------------------------- JSON

class NotJson extends Error {}

// What JSON.stringify would otherwise get wrong without a word: NaN and ±Infinity become null, a typed
// array becomes {"0": …, "1": …}; a BigInt throws a message that does not say where.
function replacer(key, value) {
  if (typeof value === 'number' && !Number.isFinite(value)) throw new NotJson(String(value));
  if (typeof value === 'bigint') throw new NotJson('a BigInt');
  // Its elements come back through here, so NaN or a BigInt in one is refused like any other.
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) return Array.from(value);
  return value;
}

/** Where the first value JSON cannot carry is, as `$.a.b[2]`. */
function pathOf(value, path = '$', seen = new Set()) {
  if (typeof value === 'number' && !Number.isFinite(value)) return path;
  if (typeof value === 'bigint') return path;
  if (value === null || typeof value !== 'object' || seen.has(value)) return null;
  seen.add(value);
  const v = typeof value.toJSON === 'function' ? value.toJSON() : value;
  if (v !== value) return pathOf(v, path, seen);
  if (Array.isArray(value) || ArrayBuffer.isView(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = pathOf(value[i], `${path}[${i}]`, seen);
      if (p) return p;
    }
    return null;
  }
  for (const k of Object.keys(value)) {
    const at = /^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`;
    const p = pathOf(value[k], at, seen);
    if (p) return p;
  }
  return null;
}

function toJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value, replacer);
  } catch (e) {
    if (e instanceof NotJson) {
      const at = pathOf(value);
      throw new Refused(`${what} ${e.message}${at ? ` at ${at}` : ''}, which JSON cannot carry`);
    }
    throw new Refused(`${what} a value JSON cannot carry: ${e.message}`);
  }
  if (text === undefined) {
    throw new Refused(`${what} ${_describe(value)}, which is not JSON; return a value such as an object`);
  }
  return text;
}

// --------------------------------------------------------------------------------------- component

/**
 * The object the component exports as the world's `model` interface, serving `ModelClass`: one
 * instance of it per component instance, built by `init`.
 * @param {typeof Model} ModelClass the entry module's default export
 */
export function component(ModelClass) {
  if (typeof ModelClass !== 'function' || !(ModelClass.prototype instanceof Model)) {
    throw new TypeError(
      `the entry module's default export is ${_describe(ModelClass)}, not a class that extends Model ` +
        "(import { Model } from 'ferry-sdk'; export default class MyModel extends Model { … })",
    );
  }
  log._sink = hostSink;
  installConsole();
  const predicts = ModelClass.prototype.predict !== Model.prototype.predict;
  let model = null;

  const theModel = () => {
    if (model === null) throw witError('internal', 'the model was called before `init`');
    return model;
  };

  // `metadata` and `self-tests` cannot fail in the contract: a throw traps the call (the version fails
  // to load), so the reason goes to the log first.
  const logged = (call, body) => {
    try {
      return body();
    } catch (error) {
      if (isWitError(error)) log.error(`${call} failed: ${error.val}`);
      else failure(call, error); // logs what was thrown, and where
      throw error;
    }
  };

  return {
    init(config, weights) {
      guarded('init', () => {
        const m = new ModelClass();
        settled('init', m.init(JSON.parse(config), weights ?? null));
        model = m;
      });
    },

    metadata() {
      return logged('metadata', () => {
        const m = theModel().metadata();
        if (!(m instanceof Metadata) && (m === null || typeof m !== 'object')) {
          throw new TypeError(`metadata returned ${_describe(m)}; return a Metadata`);
        }
        return {
          platform: String(m.platform ?? 'javascript'),
          description: String(m.description ?? ''),
          inputs: [...(m.inputs ?? [])].map(spec),
          outputs: [...(m.outputs ?? [])].map(spec),
          predictsJson: m.predictsJson == null ? predicts : Boolean(m.predictsJson),
        };
      });
    },

    infer(inputs, parameters) {
      return guarded('infer', () => {
        const request = new Inputs(inputs.map(tensorIn), JSON.parse(parameters));
        return tensorsOut(settled('infer', theModel().infer(request)), 'infer returned');
      });
    },

    predict(request) {
      return guarded('predict', () => {
        const answer = settled('predict', theModel().predict(new Request(JSON.parse(request))));
        return toJson(answer, 'predict returned');
      });
    },

    selfTests() {
      return logged('selfTests', () => {
        const tests = theModel().selfTests();
        if (!(tests instanceof SelfTests)) {
          throw new TypeError(`selfTests returned ${_describe(tests)}; return a SelfTests`);
        }
        const payload = (kind, value, what) => (kind === 'infer'
          ? { tag: 'tensors', val: tensorsOut(value, `${what} has`) }
          : { tag: 'json', val: toJson(value, `${what} has`) });
        return {
          cases: tests.cases.map((c) => ({
            name: c.name,
            input: payload(c.kind, c.input, `self-test ${JSON.stringify(c.name)}'s input`),
            expected: payload(c.kind, c.expected, `self-test ${JSON.stringify(c.name)}'s expected answer`),
            tolerance: c.tolerance,
          })),
          documents: [...tests.documents],
        };
      });
    },
  };
}
