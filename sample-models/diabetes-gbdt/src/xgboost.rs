//! A reader and evaluator for XGBoost's JSON model format (`Booster.save_model("*.json")`), for
//! single-target regression trees with numerical splits.

use ferry_sdk::{Error, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct ModelFile {
    learner: Learner,
}

#[derive(Deserialize)]
struct Learner {
    #[serde(default)]
    feature_names: Vec<String>,
    learner_model_param: LearnerParam,
    gradient_booster: GradientBooster,
    objective: Objective,
}

#[derive(Deserialize)]
struct LearnerParam {
    base_score: String,
    num_feature: String,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

#[derive(Deserialize)]
struct GradientBooster {
    name: String,
    model: GbTree,
}

#[derive(Deserialize)]
struct GbTree {
    trees: Vec<Tree>,
}

/// One tree in XGBoost's array layout: node `i` is a leaf when `left_children[i] == -1`, and then
/// `split_conditions[i]` holds its value.
#[derive(Deserialize)]
struct Tree {
    left_children: Vec<i32>,
    right_children: Vec<i32>,
    split_indices: Vec<u32>,
    split_conditions: Vec<f32>,
    default_left: Vec<u8>,
    #[serde(default)]
    split_type: Vec<u8>,
}

impl Tree {
    fn leaf_value(&self, row: &[f32]) -> f32 {
        let mut node = 0usize;
        loop {
            let left = self.left_children[node];
            if left < 0 {
                return self.split_conditions[node];
            }
            let value = row[self.split_indices[node] as usize];
            let go_left = if value.is_nan() {
                self.default_left[node] != 0
            } else {
                value < self.split_conditions[node]
            };
            node = if go_left {
                left as usize
            } else {
                self.right_children[node] as usize
            };
        }
    }

    fn check(&self, num_features: usize) -> Result<()> {
        let n = self.left_children.len();
        let lengths_agree = [
            self.right_children.len(),
            self.split_indices.len(),
            self.split_conditions.len(),
            self.default_left.len(),
        ]
        .iter()
        .all(|&len| len == n);
        if n == 0 || !lengths_agree {
            return Err(Error::internal(
                "malformed tree: node arrays differ in length",
            ));
        }
        if self.split_type.iter().any(|&t| t != 0) {
            return Err(Error::internal("categorical splits are not supported"));
        }
        for i in 0..n {
            let (l, r) = (self.left_children[i], self.right_children[i]);
            // Children come after their parent, so every walk ends.
            if l >= 0
                && (l as usize >= n
                    || r < 0
                    || r as usize >= n
                    || l as usize <= i
                    || r as usize <= i)
            {
                return Err(Error::internal(format!(
                    "malformed tree: node {i} has children {l}, {r}"
                )));
            }
            if l >= 0 && self.split_indices[i] as usize >= num_features {
                return Err(Error::internal(format!(
                    "tree splits on feature {} of {num_features}",
                    self.split_indices[i]
                )));
            }
        }
        Ok(())
    }
}

/// A validated gradient-boosted forest.
pub struct Forest {
    base_score: f32,
    num_features: usize,
    feature_names: Vec<String>,
    trees: Vec<Tree>,
}

impl Forest {
    /// Parses and validates an XGBoost JSON model.
    pub fn from_json(bytes: &[u8]) -> Result<Forest> {
        let file: ModelFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::internal(format!("not an XGBoost JSON model: {e}")))?;
        let l = file.learner;
        if l.gradient_booster.name != "gbtree" || !l.objective.name.starts_with("reg:") {
            return Err(Error::internal(format!(
                "only gbtree regression is supported, got {} / {}",
                l.gradient_booster.name, l.objective.name
            )));
        }
        // XGBoost ≥ 2 writes the base score as a one-element array: "[1.5409915E2]".
        let base_score = l
            .learner_model_param
            .base_score
            .trim_matches(['[', ']'])
            .parse::<f32>()?;
        let num_features = l.learner_model_param.num_feature.parse::<usize>()?;
        for tree in &l.gradient_booster.model.trees {
            tree.check(num_features)?;
        }
        let feature_names = if l.feature_names.len() == num_features {
            l.feature_names
        } else {
            (0..num_features).map(|i| format!("f{i}")).collect()
        };
        Ok(Forest {
            base_score,
            num_features,
            feature_names,
            trees: l.gradient_booster.model.trees,
        })
    }

    /// Number of input features.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Feature names in input order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The prediction for one row, summed in f32 in tree order as XGBoost's CPU predictor does.
    pub fn predict(&self, row: &[f32]) -> f32 {
        self.trees
            .iter()
            .fold(self.base_score, |sum, tree| sum + tree.leaf_value(row))
    }
}
