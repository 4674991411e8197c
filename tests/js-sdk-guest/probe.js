// Exercises ferry-sdk from inside a component; tests/e2e/js_sdk.rs drives it.
//
// `infer` scales input "x" by the configured factor and echoes any other tensor unchanged (the
// datatype round trip); `predict` does what the request's "do" says. The lines marked `// probe:`
// are the ones the test expects an error to name.
import { InvalidInput, Metadata, Model, SelfTests, Tensor, TensorSpec, Unsupported, log } from 'ferry-sdk';

import { miles } from './units.js';

export default class SdkProbe extends Model {
  init(config, weights) {
    if (config.fail) throw new Error('init asked to fail'); // probe: init
    this.scale = config.scale ?? 2.0;
  }

  metadata() {
    return new Metadata('probe', {
      description: 'exercises ferry-sdk',
      inputs: [new TensorSpec('x', 'FP32', [-1, 2])],
      outputs: [new TensorSpec('y', 'FP32', [-1, 2])],
    });
  }

  infer(inputs) {
    if (inputs.has('overflow')) return [new Tensor('o', 'UINT8', [1], [300])];
    if (inputs.has('negative')) return [new Tensor('n', 'UINT64', [2], [1, -1])];
    if (inputs.has('fraction')) return [new Tensor('i', 'INT32', [1], [1.5])];
    if (inputs.has('strings')) return [Tensor.bytes('s', [2], ['héllo', new Uint8Array([0xff])])];
    if (inputs.has('bigints')) return [Tensor.int64('b', [2], [BigInt(-5), BigInt(2) ** BigInt(53)])];
    if (inputs.has('inexact')) return [Tensor.int64('b', [1], [BigInt(2) ** BigInt(53) + BigInt(1)])];
    if (inputs.has('want-x')) inputs.get('x');
    if (inputs.has('x')) {
      const rows = inputs.matrix('x', 2);
      return [Tensor.fp32('y', [rows.length, 2], rows.flat().map((v) => v * this.scale))];
    }
    return [...inputs].map((t) => new Tensor(t.name, t.datatype, t.shape, t.data));
  }

  predict(request) {
    switch (request.get('do')) {
      case 'fields': {
        const f = request.fields('features', { a: Number, n: 'int' });
        return { sum: f.a + f.n };
      }
      case 'invalid':
        throw new InvalidInput('temperature: -300 is below absolute zero');
      case 'unsupported':
        throw new Unsupported('this probe does not forecast');
      case 'throw':
        return { value: request.body.missing.deeper }; // probe: TypeError
      case 'throw-long':
        throw new Error('x'.repeat(200000));
      case 'throw-string':
        throw 'just a string';
      case 'nan':
        return { x: [1, { y: NaN }] };
      case 'bigint':
        return { n: BigInt(3) };
      case 'async':
        return Promise.resolve({ a: 1 });
      case 'log':
        log.info('hello from js');
        console.log('console works', { a: 1 });
        return { logged: true };
      case 'imported':
        return { miles: miles(request.fields({ distance_km: Number }).distance_km) };
      default:
        return { echo: request.body };
    }
  }

  selfTests() {
    return new SelfTests()
      .predict('fields', { do: 'fields', features: { a: 1.5, n: 2 } }, { sum: 3.5 })
      .infer('scale', [Tensor.fp32('x', [1, 2], [1.0, -2.0])], [Tensor.fp32('y', [1, 2], [2.0, -4.0])]);
  }
}
