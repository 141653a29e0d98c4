#include "page/feature.h"

namespace swipc::page {

void FeatureSet::reattached() {
  for (size_t i = 0; i < features_.size(); ++i) features_[i]->reattached();  // one may be added meanwhile
}

void FeatureSet::detaching() {
  for (size_t i = 0; i < features_.size(); ++i) features_[i]->detaching();  // one may be added meanwhile
}

void FeatureSet::closing() {
  for (size_t i = 0; i < features_.size(); ++i) features_[i]->closing();  // one may be added meanwhile
}

}  // namespace swipc::page
